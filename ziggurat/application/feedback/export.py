"""Fine-tuning records from rated answers: supervised (SFT) and preference pairs, as JSONL lines.

SFT, the chat fine-tuning shape of OpenAI and Hugging Face TRL:
`{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}`,
the conversation path up to the rated answer (the system prompt first, if
any), ending with the answer. A corrected answer replaces the original; an
answer rated down without a correction is not a target and is skipped.

Preference, TRL's conversational preference shape:
`{"prompt": [...messages...], "chosen": [{"role": "assistant", ...}],
"rejected": [{"role": "assistant", ...}]}`. Pairs come from corrections
(chosen: the correction, rejected: the original) and from regenerations
(chosen: an answer rated up, rejected: a sibling answer to the same message
rated down).

Earlier turns whose reply failed or is empty are left out, as they were when
the model answered, so roles always alternate user/assistant after the
optional system message. Lines carry nothing but the training data (no ids,
no emails), so an export can be shared with whoever fine-tunes.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from ziggurat.application.conversations.context import is_shown_to_model
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.tree import MessageTree
from ziggurat.application.feedback.models import Feedback

TrainingRole = Literal["system", "user", "assistant"]


class TrainingMessage(TypedDict):
    role: TrainingRole
    content: str


class SftRecord(TypedDict):
    messages: list[TrainingMessage]


class PreferenceRecord(TypedDict):
    prompt: list[TrainingMessage]
    chosen: list[TrainingMessage]
    rejected: list[TrainingMessage]


def is_positive(feedback: Feedback) -> bool:
    """Thumbs up, or (without a thumb) a rating of 4 or 5."""
    if feedback.thumb is not None:
        return feedback.thumb == "up"
    return feedback.rating is not None and feedback.rating >= 4


def is_negative(feedback: Feedback) -> bool:
    """Thumbs down, or (without a thumb) a rating of 1 or 2."""
    if feedback.thumb is not None:
        return feedback.thumb == "down"
    return feedback.rating is not None and feedback.rating <= 2


def prompt_for(tree: MessageTree, answer: Message, system_prompt: str | None) -> list[TrainingMessage] | None:
    """The messages that led to `answer`, ending with its question; None if it has none."""
    messages: list[TrainingMessage] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    question: Message | None = None
    for row in tree.path_to(tree.parent_of(answer)):
        if row.role == "user":
            question = row  # a question whose reply failed is replaced by the next one
        elif question is not None and is_shown_to_model(row):
            messages += [{"role": "user", "content": question.content}, _assistant(row.content)]
            question = None
    if question is None or question.id != answer.parent_id:
        return None
    messages.append({"role": "user", "content": question.content})
    return messages


def sft_record(
    tree: MessageTree, answer: Message, feedback: Feedback, system_prompt: str | None
) -> SftRecord | None:
    target = feedback.corrected_answer or (answer.content if is_positive(feedback) else None)
    prompt = prompt_for(tree, answer, system_prompt)
    if not target or not target.strip() or prompt is None:
        return None
    return {"messages": [*prompt, _assistant(target)]}


def preference_records(
    tree: MessageTree,
    answer: Message,
    feedback: Feedback,
    system_prompt: str | None,
    feedback_by_message: dict[str, Feedback],
) -> list[PreferenceRecord]:
    prompt = prompt_for(tree, answer, system_prompt)
    if prompt is None:
        return []
    pairs: list[tuple[str, str]] = []
    correction = (feedback.corrected_answer or "").strip()
    if correction and answer.content.strip() and correction != answer.content.strip():
        pairs.append((feedback.corrected_answer or "", answer.content))
    if is_positive(feedback) and answer.content.strip():
        for sibling in tree.siblings(answer):
            rated = feedback_by_message.get(sibling.id)
            if (
                sibling.id != answer.id
                and rated is not None
                and is_negative(rated)
                and sibling.content.strip()
            ):
                pairs.append((answer.content, sibling.content))
    return [
        {"prompt": prompt, "chosen": [_assistant(chosen)], "rejected": [_assistant(rejected)]}
        for chosen, rejected in pairs
    ]


def _assistant(content: str) -> TrainingMessage:
    return {"role": "assistant", "content": content}
