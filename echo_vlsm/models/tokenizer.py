"""CLIP's byte-pair-encoding tokenizer, offline.

The vocabulary is the one OpenAI CLIP ships (``bpe_simple_vocab_16e6.txt.gz``), bundled with
``open_clip``; nothing is downloaded. Ids are CLIP's: start of text 49406, end of text 49407,
padding 0 (open_clip's convention; the attention mask, not the pad id, marks padding).
Both CLIPSeg and CRIS use it (Synthetic Boost, Sec. 2: "CLIP text encoder").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import torch

PAD_ID = 0
SOT_ID = 49406
EOT_ID = 49407


def default_bpe_path() -> str:
    """Path of the BPE merges file bundled with open_clip."""
    from open_clip.tokenizer import default_bpe

    return default_bpe()


class ClipTokenizer:
    """CLIP BPE tokenizer returning ``(input_ids, attention_mask)``.

    Sequences are ``<start_of_text> tokens <end_of_text>``, padded with ``PAD_ID`` to
    ``context_length`` (77 as in CLIP). Longer prompts are truncated and keep the end-of-text
    token in the last position, as CLIP does, so the sentence feature is still read there.

    Examples::

        >>> tok = ClipTokenizer()
        >>> ids, mask = tok(["Left ventricular cavity of the heart."])
        >>> ids.shape, int(mask.sum())
        (torch.Size([1, 77]), 11)
    """

    pad_id = PAD_ID
    sot_id = SOT_ID
    eot_id = EOT_ID

    def __init__(self, context_length: int = 77, bpe_path: str | os.PathLike | None = None):
        if context_length < 2:
            raise ValueError("context_length must be >= 2 (start and end of text), got "
                             f"{context_length}")
        path = str(bpe_path) if bpe_path is not None else default_bpe_path()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"CLIP BPE vocabulary not found: {path} (expected open_clip's "
                                    "bpe_simple_vocab_16e6.txt.gz)")
        if bpe_path is not None:  # a file from elsewhere (an exported model folder)
            check_vocabulary(path)
        self.context_length = int(context_length)
        self._bpe = _simple_tokenizer(path)
        if (self._bpe.sot_token_id, self._bpe.eot_token_id) != (SOT_ID, EOT_ID):
            raise ValueError(f"{path}: not CLIP's vocabulary (start/end of text ids "
                             f"{self._bpe.sot_token_id}/{self._bpe.eot_token_id}, expected "
                             f"{SOT_ID}/{EOT_ID})")
        self.vocab_size = self._bpe.vocab_size

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with start and end of text, not truncated."""
        if not isinstance(text, str):
            raise TypeError(f"a prompt must be a str, got {type(text).__name__}: {text!r}")
        return [SOT_ID, *self._bpe.encode(text), EOT_ID]

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Number of tokens of each text, start and end of text included, before truncation."""
        return [len(self.encode(t)) for t in _as_list(texts)]

    def __call__(self, texts: Sequence[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        texts = _as_list(texts)
        n, length = len(texts), self.context_length
        ids = torch.full((n, length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        for i, text in enumerate(texts):
            tokens = self.encode(text)
            if len(tokens) > length:
                tokens = tokens[: length - 1] + [EOT_ID]
            ids[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[i, : len(tokens)] = 1
        return ids, mask

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of one id sequence: what lies between start and end of text (padding after the
        end of text is ignored, since the pad id 0 is also the token "!")."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
        if ids and ids[0] == SOT_ID:
            ids = ids[1:]
        if EOT_ID in ids:
            ids = ids[: ids.index(EOT_ID)]
        return self._bpe.decode(ids).strip()


#: Limits on a vocabulary file (CLIP's: 1.4 MB gzipped, 3.2 MB of text, 262,145 lines).
MAX_VOCABULARY_BYTES = 16 << 20
#: The merges CLIP's tokenizer reads (lines 2 .. 48,895 of the file).
N_MERGES = 49152 - 256 - 2


def check_vocabulary(path: str | os.PathLike) -> None:
    """Check a CLIP BPE vocabulary before it is used, reading it as gzipped UTF-8 text and
    never more than ``MAX_VOCABULARY_BYTES`` of it: at most that size on disk and once
    decompressed, and at least ``N_MERGES`` merge lines of two symbols each after the
    version line.

    Raises:
        ValueError: naming the file and the problem (not gzip, too large, not text, too few
            or malformed merges).
    """
    import gzip
    import zlib

    size = os.path.getsize(path)
    if size > MAX_VOCABULARY_BYTES:
        raise ValueError(f"{path}: vocabulary of {size} bytes; at most {MAX_VOCABULARY_BYTES} "
                         "expected (CLIP's is 1.4 MB)")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read(MAX_VOCABULARY_BYTES + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: not a gzipped vocabulary ({err})") from err
    if len(raw) > MAX_VOCABULARY_BYTES:
        raise ValueError(f"{path}: vocabulary of more than {MAX_VOCABULARY_BYTES} bytes once "
                         "decompressed (CLIP's: 3.2 MB)")
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: vocabulary is not UTF-8 text ({err})") from err
    merges = lines[1:N_MERGES + 1]
    if len(merges) < N_MERGES:
        raise ValueError(f"{path}: vocabulary of {len(lines)} lines; CLIP's tokenizer reads "
                         f"{N_MERGES} merges after the first line")
    bad = next((i for i, line in enumerate(merges, 2) if len(line.split()) != 2), None)
    if bad is not None:
        raise ValueError(f"{path}: line {bad} of the vocabulary is not a merge of two symbols: "
                         f"{lines[bad - 1][:60]!r}")


class _HasContextLength(Protocol):
    @property
    def context_length(self) -> int: ...


class TokenizerMixin:
    """``tokenizer`` and ``tokenize`` of a model whose ``spec`` has a ``context_length``: the
    CLIP tokenizer, built on first use. Shared by CLIPSeg and CRIS."""

    spec: _HasContextLength  # the model's ModelSpec; only its context_length is read here
    _tokenizer: ClipTokenizer | None = None

    @property
    def tokenizer(self) -> ClipTokenizer:
        if self._tokenizer is None:
            self._tokenizer = ClipTokenizer(self.spec.context_length)
        return self._tokenizer

    def tokenize(self, texts: Sequence[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP BPE ids (padding id 0) and attention mask, (B, context_length) each."""
        return self.tokenizer(texts)


@lru_cache(maxsize=4)
def _simple_tokenizer(path: str):
    """open_clip's BPE (vocabulary and merge ranks), loaded once per file."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(bpe_path=path)


def _as_list(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("no prompts given: expected a non-empty list of strings")
    return texts
