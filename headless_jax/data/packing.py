"""Rows of seq_len tokens cut from a token stream, as examples {tokens, segment_ids, positions} (int32 [L]).

windows:   the stream (documents back to back, each ending in eos) cut into consecutive full windows; one
           segment per row, so a window may span a document boundary.
documents: each document cut into chunks of at most seq_len, chunks packed into rows in order while they fit
           (next fit); segment ids 1, 2, ... per document in a row, 0 on padding; positions restart per segment.
"""
import numpy as np

from headless_jax.data.tokens import TokenStream

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
    """The rows of one token stream, by index: a grain data source."""

    def __init__(self, stream: TokenStream, seq_len: int, packing: str, pad_id: int):
        self.stream, self.seq_len, self.pad_id = stream, seq_len, pad_id
        self.segmented = packing == "documents"
        self.spans = (document_spans(stream.doc_ends, seq_len) if self.segmented
                      else window_spans(len(stream.tokens), seq_len))

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, row: int) -> dict[str, np.ndarray]:
        start, end = (int(x) for x in self.spans[row])
        length = end - start
        doc_ends = self.stream.doc_ends
        # document ends strictly inside the row, relative to its start, split it into segments
        inner_ends = (doc_ends[np.searchsorted(doc_ends, start, "right"):np.searchsorted(doc_ends, end, "left")]
                      - start) if self.segmented else np.zeros(0, np.int64)
        index_N = np.arange(length)
        segment_N = np.searchsorted(inner_ends, index_N, "right")  # 0-based segment of each token
        segment_starts = np.concatenate([[0], inner_ends])
        example = {name: np.zeros(self.seq_len, np.int32) for name in ("tokens", "segment_ids", "positions")}
        example["tokens"][:] = self.pad_id
        example["tokens"][:length] = self.stream.tokens[start:end]
        example["segment_ids"][:length] = segment_N + 1
        example["positions"][:length] = index_N - segment_starts[segment_N]
        return example
