"""Tiny HuggingFace models with random weights and word-level tokenizers, built here (nothing downloaded):
a BERT text classifier, a BERT question answerer and a GPT-2 text generator, each a folder that
`transformers.pipeline(task, model=FOLDER)` loads. Used by tests/test_mlserver_huggingface.py and
benchmarks/peers/huggingface_conformance.py (which serves the same folders from MLServer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

WORDS = ("the a is of and to in this that it test good bad movie seldon serves models fast who what where "
         "server gpu").split()
TASKS = {"cls": "text-classification", "qa": "question-answering", "gen": "text-generation"}
RUNTIME = "mlserver_huggingface.HuggingFaceRuntime"


def _bert_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def _gpt_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<|endoftext|>", "<unk>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # words joined by spaces
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")


def build_models(root: Path, which=tuple(TASKS)) -> Dict[str, Path]:
    """Save the models named in `which` (cls, qa, gen) under root/NAME; returns their folders."""
    import torch
    from transformers import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification, GPT2Config,
                              GPT2LMHeadModel, GenerationConfig)

    torch.manual_seed(0)
    bert = dict(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=64)
    folders = {}
    for name in which:
        folder = Path(root) / name
        if name == "cls":
            model = BertForSequenceClassification(BertConfig(**bert, num_labels=2, id2label={0: "NEGATIVE",
                                                                                             1: "POSITIVE"},
                                                             label2id={"NEGATIVE": 0, "POSITIVE": 1}))
            tokenizer = _bert_tokenizer()
        elif name == "qa":
            model, tokenizer = BertForQuestionAnswering(BertConfig(**bert)), _bert_tokenizer()
        else:
            model = GPT2LMHeadModel(GPT2Config(vocab_size=2 + len(WORDS), n_embd=32, n_layer=2, n_head=2,
                                               n_positions=64, bos_token_id=0, eos_token_id=0))
            # the same answer every time, quickly: 12 tokens at most (max_length: transformers 4.50+ pipelines put
            # 256 over a model's own max_new_tokens), sampled from the likeliest one alone (greedy;
            # transformers 4.50+ samples in text-generation pipelines unless the model's generation config
            # says otherwise, and it does not write `do_sample: false`, the default)
            model.generation_config = GenerationConfig(max_length=12, top_k=1, do_sample=True, bos_token_id=0,
                                                       eos_token_id=0, pad_token_id=0)
            tokenizer = _gpt_tokenizer()
        model.eval().save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders


def write_settings(folder: Path, name: str, task: str, **more) -> None:
    extra = {"task": task, **more.pop("extra", {})}
    (folder / "model-settings.json").write_text(json.dumps({"name": name, "implementation": RUNTIME,
                                                            "parameters": {"extra": extra}, **more}))
