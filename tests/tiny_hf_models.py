"""Tiny random transformers detectors saved with processors built offline (shared by several test files)."""
from __future__ import annotations

import string

import torch


def clip_tokenizer(max_length: int = 16):
    """A CLIP BPE tokenizer over single letters (no merges), and its vocabulary size."""
    import transformers

    # id 0 must not be the start token: OWL's query mask is input_ids[:, 0] > 0
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for c in string.ascii_lowercase + ".,'":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length), len(vocab)


def save_tiny_owl(folder, *, v2: bool = True) -> str:
    """A random OWLv2 (or OWL-ViT) with a 64-pixel input and its processor, saved to ``folder``."""
    import transformers

    tokenizer, vocab_size = clip_tokenizer()
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    vision = dict(image_size=64, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2)
    torch.manual_seed(0)
    if v2:
        model = transformers.Owlv2ForObjectDetection(
            transformers.Owlv2Config(text_config=text, vision_config=vision, projection_dim=32))
        image_processor = transformers.Owlv2ImageProcessor(size={"height": 64, "width": 64})
        processor = transformers.Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    else:
        model = transformers.OwlViTForObjectDetection(
            transformers.OwlViTConfig(text_config=text, vision_config=vision, projection_dim=32))
        image_processor = transformers.OwlViTImageProcessor(size={"height": 64, "width": 64},
                                                            crop_size={"height": 64, "width": 64})
        processor = transformers.OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def save_tiny_grounding_dino(folder, extra_words: list[str], *, num_queries: int = 10) -> str:
    """A random Grounding DINO with a BERT tokenizer over a handful of words, saved to ``folder``."""
    import transformers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", *extra_words]
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)}, model_max_length=32)
    config = transformers.GroundingDinoConfig(
        backbone_config=transformers.SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1],
                                                num_heads=[1, 1], window_size=4, out_features=["stage1", "stage2"]),
        text_config=transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=32, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=num_queries, num_feature_levels=2,
        max_text_len=32, encoder_n_points=2, decoder_n_points=2, use_timm_backbone=False,
        use_pretrained_backbone=False)
    torch.manual_seed(0)
    transformers.GroundingDinoForObjectDetection(config).save_pretrained(folder)
    image_processor = transformers.GroundingDinoImageProcessor(size={"shortest_edge": 48, "longest_edge": 96})
    transformers.GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)
