"""A tiny, randomly initialised ViLT visual-question-answering model for offline tests of the
VQA shape backend (nothing is downloaded)."""

WORDS = "what is the shape of left ventricular cavity myocardium atrium enclosed in green box ?"


def write_tiny_vilt(folder, labels, seed=0):
    """A randomly initialised ViLT VQA classifier with a small BERT vocabulary, saved with its
    processor the way a hub model is: loadable by AutoModelForVisualQuestionAnswering."""
    import torch
    from transformers import (
        BertTokenizer,
        ViltConfig,
        ViltForQuestionAnswering,
        ViltImageProcessor,
        ViltProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS.split()]) + "\n"
    )
    tokenizer = BertTokenizer(str(vocab))
    config = ViltConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        image_size=64, patch_size=32, max_position_embeddings=40,
        vocab_size=tokenizer.vocab_size, id2label=dict(enumerate(labels)),
        label2id={w: i for i, w in enumerate(labels)},
    )
    torch.manual_seed(seed)
    ViltForQuestionAnswering(config).save_pretrained(folder)
    processor = ViltProcessor(
        ViltImageProcessor(size={"shortest_edge": 64}, size_divisor=32), tokenizer
    )
    processor.save_pretrained(folder)
    return folder
