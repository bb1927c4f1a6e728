"""Usage reports for administrators: requests and tokens per day, per user or per model."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import func, select

from ziggurat.application.auth.principal import Principal
from ziggurat.application.store.database import Database
from ziggurat.application.usage.models import UsageEvent
from ziggurat.errors import Forbidden, InvalidRequest

UsageGrouping = Literal["user", "model"]
MAX_REPORT_DAYS = 366


class UsageRow(BaseModel):
    day: date
    user_id: str | None = None
    model: str | None = None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageReport(BaseModel):
    by: UsageGrouping
    since: date
    until: date
    data: list[UsageRow]


class UsageReports:
    def __init__(self, *, database: Database) -> None:
        self._database = database

    async def report(
        self,
        principal: Principal,
        *,
        by: UsageGrouping,
        since: date,
        until: date,
        user_id: str | None = None,
        model: str | None = None,
    ) -> UsageReport:
        """Totals per day and per user or model, for days in `[since, until]` (UTC dates)."""
        if not principal.is_admin:
            raise Forbidden("Only administrators can read usage reports.")
        if until < since or until - since > timedelta(days=MAX_REPORT_DAYS):
            raise InvalidRequest(
                f"until must be on or after since, and at most {MAX_REPORT_DAYS} days later.", param="until"
            )
        group = UsageEvent.user_id if by == "user" else UsageEvent.model
        query = (
            select(
                UsageEvent.day,
                group,
                func.count(),
                func.coalesce(func.sum(UsageEvent.prompt_tokens), 0),
                func.coalesce(func.sum(UsageEvent.completion_tokens), 0),
            )
            .where(UsageEvent.day >= since, UsageEvent.day <= until)
            .group_by(UsageEvent.day, group)
            .order_by(UsageEvent.day, group)
        )
        if user_id is not None:
            query = query.where(UsageEvent.user_id == user_id)
        if model is not None:
            query = query.where(UsageEvent.model == model)
        async with self._database.session() as session:
            rows = (await session.execute(query)).all()
        data = [
            UsageRow(
                day=day,
                requests=requests,
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                **{"user_id" if by == "user" else "model": key},
            )
            for day, key, requests, prompt, completion in rows
        ]
        return UsageReport(by=by, since=since, until=until, data=data)
