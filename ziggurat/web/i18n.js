// UI strings in English and Simplified Chinese. The language comes from the saved
// choice, else the browser's; `t()` falls back to English for a missing key.

const en = {
  appName: "Ziggurat",
  signIn: "Sign in", register: "Create account", signOut: "Sign out",
  email: "Email", password: "Password", invitation: "Invitation code (optional)",
  noAccount: "No account yet?", haveAccount: "Already have an account?",
  signInWith: "Continue with {name}", or: "or",
  signInTitle: "Welcome back", registerTitle: "Create your account",
  registrationClosed: "Registration is closed; ask an administrator for an invitation.",
  ssoDenied: "Single sign-on was cancelled or refused by the identity provider. Try again, or sign in with a password.",
  ssoExpired: "That single sign-on took too long or was not started here. Please start it again.",
  ssoNotAllowed: "This identity cannot sign in here: the provider did not confirm an email address, or registration is closed to it. Ask an administrator.",
  ssoUnavailable: "The identity provider cannot be reached right now. Try again in a moment.",
  ssoFailed: "Single sign-on failed. Try again, or ask an administrator.",
  newChat: "New chat", search: "Search conversations", noConversations: "No conversations yet",
  pinned: "Pinned", recent: "Recent", rename: "Rename", pin: "Pin", unpin: "Unpin", delete: "Delete",
  confirmDelete: "Delete “{title}”? This cannot be undone.", untitled: "New conversation",
  renameTitle: "Rename conversation", title: "Title", save: "Save", cancel: "Cancel", close: "Close",
  messagePlaceholder: "Message Ziggurat…", send: "Send", stop: "Stop generating",
  composerHint: "Enter to send · Shift+Enter for a new line",
  copy: "Copy", copied: "Copied", copyCode: "Copy code", regenerate: "Regenerate", edit: "Edit",
  saveAndSubmit: "Save & submit", previous: "Previous version", next: "Next version",
  goodAnswer: "Good answer", badAnswer: "Bad answer", feedbackTitle: "What was wrong?",
  feedbackComment: "Comment (optional)", feedbackCorrection: "Better answer (optional)",
  feedbackThanks: "Thanks for the feedback", submit: "Submit",
  stopped: "Stopped", failed: "The answer failed", emptyTitle: "How can I help you today?",
  emptySubtitle: "Ask anything. Answers stream in as they are written.",
  model: "Model", systemPrompt: "System prompt", systemPromptHint: "Instructions the model follows in this conversation.",
  chatSettings: "Chat settings", theme: "Toggle theme", language: "中文", languageLabel: "Switch language",
  menu: "Menu", admin: "Admin", backToChat: "Back to chat",
  offline: "You are offline. Waiting for the network…", reconnecting: "Connection lost. Reconnecting…",
  reconnected: "Reconnected", retryIn: "Too many requests. Try again in {s} s.",
  networkError: "Cannot reach the server.", sessionExpired: "Your session ended; please sign in again.",
  contextTrimmed: "Older messages were left out to fit the model's context window.",
  users: "Users", usage: "Usage", models: "Models", feedback: "Feedback",
  role: "Role", active: "Active", created: "Created", filterEmail: "Filter by email",
  byUser: "By user", byModel: "By model", since: "Since", until: "Until", day: "Day", user: "User",
  requests: "Requests", promptTokens: "Prompt tokens", completionTokens: "Completion tokens", total: "Total",
  name: "Name", engine: "Engine", enabled: "Enabled", served: "Served", allowedRoles: "Allowed roles",
  everyone: "everyone", description: "Description",
  thumb: "Rating", question: "Question", answer: "Answer", comment: "Comment", correction: "Correction",
  when: "When", all: "All", up: "Thumbs up", down: "Thumbs down", withCorrection: "With a correction",
  exportSft: "Export SFT (JSONL)", exportPreference: "Export preference pairs (JSONL)",
  loadMore: "Load more", nothingHere: "Nothing here yet", saved: "Saved", apply: "Apply",
  you: "You", assistant: "Assistant", demoModel: "demo",
};

const zh = {
  appName: "Ziggurat",
  signIn: "登录", register: "注册账号", signOut: "退出登录",
  email: "邮箱", password: "密码", invitation: "邀请码（可选）",
  noAccount: "还没有账号？", haveAccount: "已有账号？",
  signInWith: "使用 {name} 登录", or: "或",
  signInTitle: "欢迎回来", registerTitle: "创建账号",
  registrationClosed: "注册已关闭，请向管理员索取邀请。",
  ssoDenied: "单点登录已被取消，或被身份提供方拒绝。请重试，或使用密码登录。",
  ssoExpired: "这次单点登录耗时过长，或并非从此处发起，请重新开始。",
  ssoNotAllowed: "此身份无法在这里登录：身份提供方未确认邮箱地址，或注册未对其开放。请联系管理员。",
  ssoUnavailable: "暂时无法连接身份提供方，请稍后再试。",
  ssoFailed: "单点登录失败。请重试，或联系管理员。",
  newChat: "新对话", search: "搜索对话", noConversations: "还没有对话",
  pinned: "已置顶", recent: "最近", rename: "重命名", pin: "置顶", unpin: "取消置顶", delete: "删除",
  confirmDelete: "删除“{title}”？此操作无法撤销。", untitled: "新对话",
  renameTitle: "重命名对话", title: "标题", save: "保存", cancel: "取消", close: "关闭",
  messagePlaceholder: "给 Ziggurat 发送消息…", send: "发送", stop: "停止生成",
  composerHint: "Enter 发送 · Shift+Enter 换行",
  copy: "复制", copied: "已复制", copyCode: "复制代码", regenerate: "重新生成", edit: "编辑",
  saveAndSubmit: "保存并提交", previous: "上一个版本", next: "下一个版本",
  goodAnswer: "回答很好", badAnswer: "回答不好", feedbackTitle: "哪里有问题？",
  feedbackComment: "评论（可选）", feedbackCorrection: "更好的回答（可选）",
  feedbackThanks: "感谢你的反馈", submit: "提交",
  stopped: "已停止", failed: "回答失败", emptyTitle: "今天有什么可以帮你？",
  emptySubtitle: "随便问。回答会边生成边显示。",
  model: "模型", systemPrompt: "系统提示词", systemPromptHint: "模型在本对话中遵循的指示。",
  chatSettings: "对话设置", theme: "切换主题", language: "English", languageLabel: "切换语言",
  menu: "菜单", admin: "管理", backToChat: "返回对话",
  offline: "网络已断开，正在等待网络恢复…", reconnecting: "连接中断，正在重新连接…",
  reconnected: "已重新连接", retryIn: "请求过于频繁，请在 {s} 秒后重试。",
  networkError: "无法连接服务器。", sessionExpired: "会话已结束，请重新登录。",
  contextTrimmed: "为适应模型的上下文窗口，较早的消息未被包含。",
  users: "用户", usage: "用量", models: "模型", feedback: "反馈",
  role: "角色", active: "启用", created: "创建时间", filterEmail: "按邮箱筛选",
  byUser: "按用户", byModel: "按模型", since: "开始", until: "结束", day: "日期", user: "用户",
  requests: "请求数", promptTokens: "提示词 token", completionTokens: "生成 token", total: "合计",
  name: "名称", engine: "引擎", enabled: "已启用", served: "在线", allowedRoles: "允许的角色",
  everyone: "所有人", description: "描述",
  thumb: "评价", question: "问题", answer: "回答", comment: "评论", correction: "修正",
  when: "时间", all: "全部", up: "赞", down: "踩", withCorrection: "含修正",
  exportSft: "导出 SFT（JSONL）", exportPreference: "导出偏好对（JSONL）",
  loadMore: "加载更多", nothingHere: "暂无内容", saved: "已保存", apply: "应用",
  you: "你", assistant: "助手", demoModel: "演示",
};

const DICTIONARIES = { en, "zh-CN": zh };
const STORAGE_KEY = "ziggurat.lang";

function initialLanguage() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved && DICTIONARIES[saved]) return saved;
  const preferred = navigator.languages?.length ? navigator.languages : [navigator.language || "en"];
  return preferred.some((lang) => lang.toLowerCase().startsWith("zh")) &&
    !preferred[0].toLowerCase().startsWith("en") ? "zh-CN" : "en";
}

let current = initialLanguage();
document.documentElement.lang = current;

export function language() { return current; }

export function setLanguage(lang) {
  current = DICTIONARIES[lang] ? lang : "en";
  localStorage.setItem(STORAGE_KEY, current);
  document.documentElement.lang = current;
}

export function toggleLanguage() { setLanguage(current === "en" ? "zh-CN" : "en"); }

/** The string for `key`, with `{name}` placeholders filled from `params`. */
export function t(key, params = {}) {
  const text = DICTIONARIES[current][key] ?? en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ""));
}
