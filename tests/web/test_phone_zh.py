"""A 360-px phone in Chinese: the UI follows the browser's language, fits the screen, and can switch back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.web.conftest import PASSWORD, WebServer, new_page, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

PHONE = {
    "viewport": {"width": 360, "height": 740},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


def assert_fits(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width} px wide on a 360 px screen"


def test_phone_in_chinese(browser: Browser, web_server: WebServer) -> None:
    context, page = new_page(browser, web_server, locale="zh-CN", color_scheme="dark", **PHONE)
    page.goto("/register")
    page.get_by_role("heading", name="创建账号").wait_for()
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert_fits(page)
    screenshot(page, "phone-zh-register")

    page.get_by_label("邮箱").fill("li@example.com")
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="注册账号").click()
    page.get_by_role("heading", name="今天有什么可以帮你？").wait_for()
    assert_fits(page)
    screenshot(page, "phone-zh-empty")

    composer = page.get_by_label("给 Ziggurat 发送消息…")
    composer.fill("第一行")
    composer.press("Shift+Enter")
    composer.type("介绍一下金字形神塔")
    assert composer.input_value() == "第一行\n介绍一下金字形神塔"
    composer.press("Enter")
    page.locator(".message.assistant[data-status=complete]").wait_for()
    page.locator(".message.assistant .markdown", has_text="END-OF-ANSWER").wait_for()
    assert page.locator(".message.user .bubble").inner_text() == "第一行\n介绍一下金字形神塔"
    assert_fits(page)
    assert page.locator(".sidebar").bounding_box()["x"] < 0  # type: ignore[index]  # off-canvas until opened
    screenshot(page, "phone-zh-chat-dark")

    page.get_by_role("button", name="菜单").click()
    sidebar = page.locator(".sidebar")
    page.wait_for_function("() => document.querySelector('.sidebar').getBoundingClientRect().x >= 0")
    assert sidebar.locator(".conv-item").count() == 1
    screenshot(page, "phone-zh-menu")
    page.locator(".scrim").click(position={"x": 340, "y": 400})

    page.get_by_role("button", name="切换语言").click()
    page.get_by_label("Message Ziggurat…").wait_for()
    assert page.evaluate("document.documentElement.lang") == "en"
    context.close()
    assert web_server.console_errors == []
