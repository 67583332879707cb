"""Sentence embeddings made with onnxruntime the way swarm makes them with tract: the model's
own tokenizer (no padding but within a batch, at most 256 tokens), mean pooling over the
attention mask, L2 normalisation. The reference every ops/*-reference script compares with.
"""
import os

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

RUNTIME = f"onnxruntime {ort.__version__}"


def tokenizer(models):
    tok = Tokenizer.from_file(f"{models}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(256)
    return tok


class Embedder:
    """One model in onnxruntime, on `threads` threads (onnxruntime's default when None)."""

    def __init__(self, models, model, threads=None):
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(f"{models}/{model}", options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = [o.name for o in self.session.get_outputs() if len(o.shape) == 3][0]

    def encodings(self, encodings):
        """Unit vectors of tokenised texts run as one batch, padded to the longest."""
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run([self.output], {k: v for k, v in feed.items() if k in self.inputs})[0]
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        return np.stack([p / max(np.linalg.norm(p), 1e-12) for p in pooled])


def cores():
    return os.cpu_count() or 1
