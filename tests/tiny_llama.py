"""A tiny Llama chat model built offline, for tests that need a real transformers model.

There is no model hub in CI, so tests cannot download SmolLM2. This module builds
a complete model directory from nothing: a byte-level BPE tokenizer trained on a
small in-memory corpus (its merges are few, so Chinese characters and emoji span
several byte tokens, which exercises incremental UTF-8 decoding), a ChatML chat
template, a 2-layer `LlamaForCausalLM` and a generation config with two EOS ids.

The weights are briefly trained so that greedy decoding reproduces `MEMORISED`
replies exactly: tests can then assert on real multi-byte output, stop strings
and EOS handling instead of on noise. Other prompts give arbitrary but
deterministic text. Building takes a few seconds; cache it per test session.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

BOS, EOS, PAD, IM_START, IM_END = "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

MEMORISED: dict[str, str] = {
    "你好": "你好！我是一个小模型。😀👍 再见！",
    "Tell me a story.": "Once upon a time, there was a tiny llama who loved to count: one, two, three.",
}

_CORPUS = [
    *MEMORISED,
    *MEMORISED.values(),
    "The quick brown fox jumps over the lazy dog. Hello world, hello model.",
    "中文测试：今天天气很好，我们去公园散步吧。模型生成文本。",
    "Emoji time 🎉🚀🌍 and more 😀 text.",
]

_TRAIN_STEPS = 120
_SEED = 1234


def _train_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=[PAD, BOS, EOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START, EOS],
        chat_template=CHAT_TEMPLATE,
    )


def _training_batch(tokenizer: PreTrainedTokenizerFast) -> tuple[list[list[int]], list[list[int]]]:
    inputs: list[list[int]] = []
    labels: list[list[int]] = []
    for prompt, reply in MEMORISED.items():
        prefix = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        prompt_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(reply + IM_END, add_special_tokens=False)["input_ids"]
        inputs.append(prompt_ids + reply_ids)
        labels.append([-100] * len(prompt_ids) + reply_ids)
    return inputs, labels


def _memorise(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    inputs, labels = _training_batch(tokenizer)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(_TRAIN_STEPS):
        for input_ids, label_ids in zip(inputs, labels, strict=True):
            loss = model(input_ids=torch.tensor([input_ids]), labels=torch.tensor([label_ids])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def build_tiny_llama(path: Path) -> Path:
    """Write a loadable tiny chat model (weights, tokenizer, generation config) into `path`."""
    torch.manual_seed(_SEED)
    tokenizer = _train_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    _memorise(model, tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(EOS)],
        pad_token_id=tokenizer.pad_token_id,
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
