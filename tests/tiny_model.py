"""Build tiny random causal LMs (GPT-2, Llama, Qwen2, GPT-NeoX shapes) with real tokenizers on disk.

They are loaded through the same `from_pretrained` path as `gpt2` or any hub model, so tests and
quick bench runs exercise the real loading, training and generation code without the hub.
Tokenizers are trained offline with `tokenizers`: byte-level BPE (GPT-2, Qwen2, GPT-NeoX) or a
SentencePiece-style BPE with byte fallback (Llama: a newline is the piece `<0x0A>`).
"""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "tiny_corpus.txt"
EOS = "<|endoftext|>"


def set_adapter_weights(folder: str | Path, seed: int, std: float = 0.05) -> Path:
    """Overwrite a saved peft adapter's LoRA matrices and token rows with seeded normal values.

    A test that needs an adapter which changes the output sets it instead of hoping that a few
    training steps move it far enough: how far they move differs between CPUs (bf16 autocast on
    Intel AMX, fp32 elsewhere), so a claim built on them held on one machine and failed on another.
    """
    import torch
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "adapter_model.safetensors"
    tensors = load_file(path)
    generator = torch.Generator().manual_seed(seed)
    for key, tensor in tensors.items():
        if "lora_A" in key or "lora_B" in key or "trainable_tokens_delta" in key:
            values = torch.randn(tensor.shape, generator=generator) * std
            tensors[key] = values.to(tensor.dtype).contiguous()
    save_file(tensors, path, metadata={"format": "pt"})
    return Path(folder)


def _byte_level_tokenizer(corpus_files: list[Path], vocab_size: int, specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train([str(p) for p in corpus_files], trainer)
    return tokenizer


def _sentencepiece_tokenizer(corpus_files: list[Path], vocab_size: int):
    """Llama-style: Metaspace pieces, BPE with byte fallback (`<0x0A>` for a newline)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = ["<unk>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=specials, limit_alphabet=120)
    draft = Tokenizer(models.BPE(unk_token="<unk>"))
    draft.pre_tokenizer = pre_tokenizers.Metaspace()
    lines = [line.strip() for p in corpus_files for line in Path(p).read_text(encoding="utf-8").splitlines()]
    draft.train_from_iterator(lines, trainer)  # no newline in the alphabet: "\n" falls back to <0x0A>
    vocab = draft.get_vocab()
    for byte in range(256):  # the byte pieces, as SentencePiece's byte_fallback adds them
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    import json

    merges = [
        tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
        for m in json.loads(draft.to_str())["model"]["merges"]
    ]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens(specials)
    return tokenizer


def build_tiny_gpt2(
    out_dir: str | Path,
    *,
    vocab_size: int = 512,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 256,
    seed: int = 0,
    corpus_files: list[Path] | None = None,
    model_vocab_size: int | None = None,
) -> Path:
    """Tokenizer trained on `corpus_files` (default: the shipped corpus); random weights.

    `model_vocab_size` pads the embedding to a given size (50257 gives GPT-2-124M's shapes for
    speed measurements, whatever the tokenizer learned).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _byte_level_tokenizer(corpus_files or [CORPUS], vocab_size, [EOS])
    fast = GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    fast.model_max_length = n_positions
    fast.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=max(len(fast), model_vocab_size or 0),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(out_dir)
    return out_dir


ARCHITECTURES = ("llama", "qwen2", "gpt_neox")


def build_tiny_causal_lm(
    out_dir: str | Path,
    arch: str,
    *,
    vocab_size: int = 600,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    positions: int = 256,
    seed: int = 0,
    corpus_files: list[Path] | None = None,
) -> Path:
    """A tiny random model of another architecture, with the tokenizer that architecture ships."""
    import torch
    import transformers as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = corpus_files or [CORPUS]
    if arch == "llama":
        fast = tf.LlamaTokenizerFast(
            tokenizer_object=_sentencepiece_tokenizer(corpus, vocab_size),
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            add_bos_token=False,
            add_eos_token=False,
        )
    elif arch == "qwen2":  # Qwen2 has no BOS and pads with its end-of-text token
        tokenizer = _byte_level_tokenizer(corpus, vocab_size, [EOS, "<|im_end|>"])
        fast = tf.Qwen2TokenizerFast(
            tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS, unk_token=None, bos_token=None
        )
    elif arch == "gpt_neox":
        fast = tf.GPTNeoXTokenizerFast(
            tokenizer_object=_byte_level_tokenizer(corpus, vocab_size, [EOS]),
            bos_token=EOS,
            eos_token=EOS,
            unk_token=EOS,
        )
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    fast.model_max_length = positions
    fast.save_pretrained(out_dir)
    common = dict(
        vocab_size=len(fast),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=positions,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.bos_token_id,
    )
    torch.manual_seed(seed)
    if arch == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=2, **common))
    elif arch == "qwen2":
        model = tf.Qwen2ForCausalLM(tf.Qwen2Config(num_key_value_heads=2, tie_word_embeddings=True, **common))
    else:
        model = tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**common))
    model.save_pretrained(out_dir)
    return out_dir


def write_tiny_gguf(
    path: str | Path,
    *,
    quant: str = "Q8_0",
    architecture: str = "llama",
    vocab_size: int = 600,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
) -> Path:
    """A tiny random Llama as a GGUF file, as llama.cpp writes one (byte-level BPE tokenizer in its
    metadata, the 2-D weights quantized to `quant`, the norms in F32), for the GGUF-base tests.

    `architecture` is only written to the header: another name makes a file transformers refuses.
    """
    import json

    import gguf
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = _byte_level_tokenizer([CORPUS], vocab_size, [EOS])
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = [
        m if isinstance(m, str) else " ".join(m) for m in json.loads(tokenizer.to_str())["model"]["merges"]
    ]
    eos = vocab[EOS]
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(hidden * 2)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t == EOS else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eos)
    writer.add_eos_token_id(eos)
    writer.add_pad_token_id(eos)
    writer.add_add_bos_token(False)
    rng = np.random.default_rng(seed)
    quant_type = gguf.GGMLQuantizationType[quant]

    def weight(name: str, rows: int, cols: int) -> None:
        values = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        if quant_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(name, values.astype(np.float16 if quant == "F16" else np.float32))
            return
        writer.add_tensor(name, gguf.quants.quantize(values, quant_type), raw_dtype=quant_type)

    head_dim = hidden // heads
    weight("token_embd.weight", len(tokens), hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        weight(f"blk.{i}.attn_q.weight", hidden, hidden)
        weight(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        weight(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        weight(f"blk.{i}.attn_output.weight", hidden, hidden)
        weight(f"blk.{i}.ffn_gate.weight", hidden * 2, hidden)
        weight(f"blk.{i}.ffn_up.weight", hidden * 2, hidden)
        weight(f"blk.{i}.ffn_down.weight", hidden, hidden * 2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
