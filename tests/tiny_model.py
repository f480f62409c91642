"""Build a tiny GPT-2 (2 layers, byte-level BPE tokenizer trained on a shipped corpus) on disk.

It is loaded through the same `from_pretrained` path as `gpt2` or any hub model, so tests and
quick bench runs exercise the real loading, training and generation code without the hub.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "tiny_corpus.txt"
EOS = "<|endoftext|>"


def build_tiny_gpt2(out_dir: str | Path, *, vocab_size: int = 512, n_layer: int = 2, n_embd: int = 64,
                    n_head: int = 2, n_positions: int = 256, seed: int = 0,
                    corpus_files: list[Path] | None = None, model_vocab_size: int | None = None) -> Path:
    """Tokenizer trained on `corpus_files` (default: the shipped corpus); random weights.

    `model_vocab_size` pads the embedding to a given size (50257 gives GPT-2-124M's shapes for
    speed measurements, whatever the tokenizer learned).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train([str(p) for p in (corpus_files or [CORPUS])], trainer)
    fast = GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    fast.model_max_length = n_positions
    fast.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=max(len(fast), model_vocab_size or 0),
        n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(out_dir)
    return out_dir
