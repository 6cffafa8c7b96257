"""Rows of seq_len tokens cut from a token stream, as examples {tokens, segment_ids, positions} (int32 [L]).

windows:   the stream (documents back to back, each ending in eos) cut into consecutive full windows; one
           segment per row, so a window may span a document boundary.
documents: each document cut into chunks of at most seq_len, chunks packed into rows in order while they fit
           (next fit); segment ids 1, 2, ... per document in a row, 0 on padding; positions restart per segment.
"""
import numpy as np

from headless_jax.data.store import TokenStream

PACKINGS = ("windows", "documents")


def window_spans(num_tokens: int, seq_len: int) -> np.ndarray:
    """[R, 2] (start, end) of each full window; the stream's remainder is dropped."""
    starts = np.arange(num_tokens // seq_len, dtype=np.int64) * seq_len
    return np.stack([starts, starts + seq_len], axis=1)


def document_spans(doc_ends: np.ndarray, seq_len: int) -> np.ndarray:
    """[R, 2] (start, end) of each packed row.

    Chunks follow each other in the stream, so every row is one contiguous span; and a chunk that ends
    mid-document is a full seq_len chunk, which fills a row alone: inside a row, segments change only at
    document ends."""
    spans, row_start, doc_start = [], 0, 0
    for doc_end in doc_ends.tolist():
        for chunk_start in range(doc_start, doc_end, seq_len):
            chunk_end = min(chunk_start + seq_len, doc_end)
            if chunk_end - row_start > seq_len:  # the chunk does not fit: close the row before it
                spans.append((row_start, chunk_start))
                row_start = chunk_start
        doc_start = doc_end
    if doc_start > row_start:
        spans.append((row_start, doc_start))
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


class PackedRows:
    """The rows of one token stream, read a batch at a time."""

    def __init__(self, stream: TokenStream, seq_len: int, packing: str, pad_id: int):
        self.stream, self.seq_len, self.pad_id = stream, seq_len, pad_id
        self.segmented = packing == "documents"
        self.spans = (document_spans(stream.doc_ends, seq_len) if self.segmented
                      else window_spans(len(stream.tokens), seq_len))

    def __len__(self) -> int:
        return len(self.spans)

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows number `rows` [R] as {tokens, segment_ids, positions}, each int32 [R, L]."""
        start_R, end_R = self.spans[rows].T
        index_RxL = start_R[:, None] + np.arange(self.seq_len)  # of each token in the stream
        valid_RxL = index_RxL < end_R[:, None]  # False on padding
        tokens = self.stream.tokens[np.minimum(index_RxL, len(self.stream.tokens) - 1)]
        if not self.segmented:
            return {"tokens": tokens.astype(np.int32), "segment_ids": np.ones_like(index_RxL, np.int32),
                    "positions": np.broadcast_to(np.arange(self.seq_len, dtype=np.int32), index_RxL.shape).copy()}
        doc_RxL = np.searchsorted(self.stream.doc_ends, index_RxL, "right")  # document of each token
        doc_start_RxL = np.concatenate([[0], self.stream.doc_ends])[doc_RxL]
        segment_start_RxL = np.maximum(doc_start_RxL, start_R[:, None])  # a row may start mid-document
        return {"tokens": np.where(valid_RxL, tokens, self.pad_id).astype(np.int32),
                "segment_ids": np.where(valid_RxL, doc_RxL - doc_RxL[:, :1] + 1, 0).astype(np.int32),
                "positions": np.where(valid_RxL, index_RxL - segment_start_RxL, 0).astype(np.int32)}
