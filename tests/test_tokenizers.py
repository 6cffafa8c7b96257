"""Both kinds of tokenizer behind one interface: a Hugging Face byte-level BPE (trained here, offline) loaded from
its tokenizer.json, and the SentencePiece model headless_jax trains; special ids, run files, byte offsets and
the bytes each token stands for, on text with multi-byte UTF-8 characters."""
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from headless_jax.config import base_config
from headless_jax.data import book_names, parse_sources, read_book
from headless_jax.data.errors import DataError, MissingDataError
from headless_jax.data.tokenizer import (RUN_HF_TOKENIZER_FILE, RUN_TOKENIZER_FILE, HFTokenizer, Tokenizer,
                                         load_run_tokenizer, load_tokenizer, train_sentencepiece)
from headless_jax.downstream.lm_eval import token_pieces

HF_TRAINED = 300  # 256 byte tokens, 2 special tokens, 42 merges
HF_ADDED = ("[UNK]", "[MASK]", "[CLS]", "[SEP]")  # the special tokens the trained BPE lacks
MODEL_VOCAB = 320  # larger than the tokenizer, as Pythia's 50304 for 50277 tokens
SP_VOCAB = 384
MULTIBYTE = "Café crème, naïve façade — 中文字符 and emoji 😀🎉; Ærøskøbing, Łódź.\n\n"
TEXTS = ["It is a truth universally acknowledged, that a single man.",
         " leading space, naïve café — 東京 🙂 £5",
         "Two  spaces,\n\nnew paragraph,\ttab, trailing ",
         MULTIBYTE * 2]


@pytest.fixture(scope="module")
def hf_path(tmp_path_factory) -> str:
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=HF_TRAINED, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([read_book(book_names()[0])[:8000]], trainer)
    assert tokenizer.get_vocab_size() == HF_TRAINED
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tokenizer.save(str(path))
    return str(path)


def hf_config(path: str, vocab_size: int = MODEL_VOCAB):
    config = base_config()
    config.data.tokenizer_model = path
    config.model.vocab_size = vocab_size
    return config


@pytest.fixture(scope="module")
def hf(hf_path) -> HFTokenizer:
    return load_tokenizer(hf_config(hf_path), "unused")


@pytest.fixture(scope="module")
def sp(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(read_book(book_names()[0])[:30_000] + MULTIBYTE * 20)
    return Tokenizer(train_sentencepiece(parse_sources(f"text:{path}"), SP_VOCAB, 0.0, 10**6), "test", SP_VOCAB)


@pytest.fixture(scope="module", params=["hf", "sp"])
def either(request, hf, sp):
    return {"hf": hf, "sp": sp}[request.param]


def test_a_json_tokenizer_model_loads_as_a_hugging_face_tokenizer(hf, hf_path):
    assert isinstance(hf, HFTokenizer)
    assert isinstance(Tokenizer.from_file(hf_path, MODEL_VOCAB), HFTokenizer)  # the loading callers use today
    assert hf.vocab_size == HF_TRAINED + len(HF_ADDED)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_lossless(either, text):
    ids = either.encode(text)
    assert either.decode(ids) == text
    assert either.encode_batch([text, "x", text]) == [ids, either.encode("x"), ids]


def test_special_tokens_are_found_by_name(hf, hf_path):
    trained = tokenizers.Tokenizer.from_file(hf_path)
    endoftext, padding = trained.token_to_id("<|endoftext|>"), trained.token_to_id("<|padding|>")
    assert (hf.eos_id, hf.bos_id, hf.pad_id) == (endoftext, endoftext, padding)
    assert hf.encode("a<|endoftext|>b")[1] == hf.eos_id


def test_missing_special_tokens_are_added_after_the_vocabulary(hf):
    added = (hf.unk_id, hf.mask_id, hf.cls_id, hf.sep_id)
    assert sorted(added) == list(range(HF_TRAINED, HF_TRAINED + len(HF_ADDED)))
    assert all(HF_TRAINED <= i < MODEL_VOCAB for i in added)
    assert [hf.encode(name) for name in HF_ADDED] == [[i] for i in added]  # whole tokens in text, never split
    assert set(hf.special_ids) == {hf.eos_id, hf.pad_id, *added}


def test_sentencepiece_special_ids_are_instance_attributes_at_0_to_6(sp):
    assert (sp.pad_id, sp.unk_id, sp.bos_id, sp.eos_id, sp.mask_id, sp.cls_id, sp.sep_id) == tuple(range(7))
    assert sp.special_ids == tuple(range(7))
    assert "pad_id" in vars(sp) and not hasattr(Tokenizer, "pad_id")


def test_too_small_a_model_vocabulary_names_the_tokens_and_the_fix(hf_path):
    with pytest.raises(DataError, match=r"tokenizer.json: lacks special tokens .*model.vocab_size=302: "
                                        r"\[CLS\] \(id 302\), \[SEP\] \(id 303\); raise "
                                        r"--config.model.vocab_size to 304 or more, or use a tokenizer that has"):
        load_tokenizer(hf_config(hf_path, HF_TRAINED + 2), "unused")
    with pytest.raises(DataError, match=rf"has {HF_TRAINED} tokens but model.vocab_size=299; set "
                                        rf"--config.model.vocab_size={HF_TRAINED} or more"):
        load_tokenizer(hf_config(hf_path, HF_TRAINED - 1), "unused")
    assert load_tokenizer(hf_config(hf_path, HF_TRAINED + len(HF_ADDED)), "unused").vocab_size == 304


def test_encoding_adds_no_post_processor_tokens_and_never_truncates(hf, hf_path, tmp_path):
    eos = tokenizers.Tokenizer.from_file(hf_path).token_to_id("<|endoftext|>")
    configured = tokenizers.Tokenizer.from_file(hf_path)
    configured.post_processor = processors.TemplateProcessing(single="$A <|endoftext|>",
                                                              special_tokens=[("<|endoftext|>", eos)])
    configured.enable_truncation(8)
    assert configured.encode(MULTIBYTE).ids[-1] == eos and len(configured.encode(MULTIBYTE).ids) == 8
    configured.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(hf_config(str(tmp_path / "tokenizer.json")), "unused")
    assert loaded.encode(MULTIBYTE) == hf.encode(MULTIBYTE) and len(hf.encode(MULTIBYTE)) > 8
    assert loaded.encode_batch([MULTIBYTE]) == [hf.encode(MULTIBYTE)]
    assert eos not in loaded.encode(MULTIBYTE)


def test_not_a_tokenizer_json_is_rejected(tmp_path):
    (tmp_path / "junk.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(DataError, match=r"junk.json: not a Hugging Face tokenizer.json"):
        load_tokenizer(hf_config(str(tmp_path / "junk.json")), "unused")


def test_fingerprint_is_stable_and_tells_tokenizers_apart(hf, hf_path, sp):
    again = load_tokenizer(hf_config(hf_path), "unused")
    assert again.fingerprint == hf.fingerprint and again.special_ids == hf.special_ids
    assert hf.fingerprint != sp.fingerprint
    grown = load_tokenizer(hf_config(hf_path, 400), "unused")  # the model's size is no part of the tokenizer
    assert grown.fingerprint == hf.fingerprint


@pytest.mark.parametrize("kind,file", [("hf", RUN_HF_TOKENIZER_FILE), ("sp", RUN_TOKENIZER_FILE)])
def test_a_saved_run_tokenizer_loads_back_the_same(kind, file, hf, sp, tmp_path):
    tokenizer = {"hf": hf, "sp": sp}[kind]
    size = MODEL_VOCAB if kind == "hf" else SP_VOCAB
    tokenizer.save_to_run(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [file]
    loaded = load_run_tokenizer(tmp_path, size)
    assert type(loaded) is type(tokenizer) and loaded.fingerprint == tokenizer.fingerprint
    assert (loaded.mask_id, loaded.special_ids) == (tokenizer.mask_id, tokenizer.special_ids)
    assert loaded.encode(MULTIBYTE) == tokenizer.encode(MULTIBYTE)


def test_a_workdir_without_a_tokenizer_names_both_files(tmp_path):
    with pytest.raises(MissingDataError, match=rf"has no {RUN_TOKENIZER_FILE} or {RUN_HF_TOKENIZER_FILE}"):
        load_run_tokenizer(tmp_path, MODEL_VOCAB)


def test_a_workdir_with_both_files_is_refused(hf, sp, tmp_path):
    hf.save_to_run(tmp_path)
    sp.save_to_run(tmp_path)
    with pytest.raises(DataError, match="has both"):
        load_run_tokenizer(tmp_path, MODEL_VOCAB)


@pytest.mark.parametrize("text", TEXTS + ["a<|endoftext|>b [MASK] 中"])
def test_hf_byte_offsets_slice_the_text_into_each_tokens_bytes(hf, hf_path, text):
    data, pieces = text.encode("utf-8"), hf.encode_with_offsets(text)
    assert [i for i, _, _ in pieces] == hf.encode(text)
    assert pieces[0][1] == 0 and pieces[-1][2] == len(data)
    assert all(end == begin for (_, _, end), (_, begin, _) in zip(pieces, pieces[1:]))  # contiguous
    raw = tokenizers.Tokenizer.from_file(hf_path)
    for k, (token_id, begin, end) in enumerate(pieces):
        if token_id < HF_TRAINED and token_id not in hf.special_ids:  # a byte-level token: one character a byte
            assert end - begin == len(raw.id_to_token(token_id)) > 0
        try:
            prefix = data[:end].decode("utf-8")
        except UnicodeDecodeError:  # inside a character that byte-level BPE split
            continue
        without_specials = prefix.replace("<|endoftext|>", "").replace("[MASK]", "")  # decode() gives no text
        assert hf.decode([i for i, _, _ in pieces[:k + 1]]) == without_specials


def test_sentencepiece_byte_offsets_cover_the_text(sp):
    text = "naïve 中 🙂 and plain words"
    pieces = sp.encode_with_offsets(text)
    assert [i for i, _, _ in pieces] == sp.encode(text)
    assert all(end == begin for (_, _, end), (_, begin, _) in zip(pieces, pieces[1:]))
    assert pieces[0][1] == 0 and pieces[-1][2] == len(text.encode("utf-8"))
    data = text.encode("utf-8")
    for token_id, begin, end in pieces[-3:]:  # ASCII: each piece spans its own text ("▁" a space)
        assert data[begin:end].decode() == sp.processor.id_to_piece(token_id).replace("▁", " ")


@pytest.mark.parametrize("text", TEXTS + ["中", "😀" * 5, "é" * 7])
def test_token_bytes_sum_to_the_utf8_length(either, text):
    size = MODEL_VOCAB if isinstance(either, HFTokenizer) else SP_VOCAB
    counts = either.token_bytes(size)
    assert counts.shape == (size,) and counts.dtype.name == "int32"
    assert sum(int(counts[i]) for i in either.encode(text)) == len(text.encode("utf-8"))


def test_token_bytes_of_special_and_padding_ids_are_zero(either):
    size = MODEL_VOCAB + 16 if isinstance(either, HFTokenizer) else SP_VOCAB + 16
    counts = either.token_bytes(size)
    assert all(counts[i] == 0 for i in either.special_ids)
    assert not counts[either.vocab_size:].any()
    with pytest.raises(ValueError, match="has"):
        either.token_bytes(either.vocab_size - 1)


def test_lm_eval_token_pieces_use_the_tokenizers_offsets(either):
    text = "She said naïve 中文 words.  \n"
    assert token_pieces(either, text) == either.encode_with_offsets(text.rstrip())


@pytest.mark.parametrize("text", TEXTS)
def test_word_starts_are_the_tokens_that_begin_with_whitespace(either, text):
    """Whole-word span masking's units: a token begins a word iff its own bytes of the text begin with whitespace
    (SentencePiece's "▁", byte-level BPE's "Ġ"); special and padding ids are units of their own."""
    size = MODEL_VOCAB if isinstance(either, HFTokenizer) else SP_VOCAB
    starts = either.word_starts(size)
    data = text.encode("utf-8")
    pieces = either.encode_with_offsets(text)
    assert any(starts[i] for i, _, _ in pieces) and not all(starts[i] for i, _, _ in pieces)
    for token_id, begin, _ in pieces:
        assert starts[token_id] == (data[begin:begin + 1] in (b" ", b"\n", b"\t", b"\r")), (token_id, data[begin:])
    assert starts[list(either.special_ids)].all() and starts[either.vocab_size:].all()
