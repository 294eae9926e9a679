import numpy as np
import pytest

from kerasgen import data, idcache, textfiles
from kerasgen.errors import DataError
from kerasgen.vocab import Vocabulary


def test_vocabulary_round_trip_and_order():
    v = Vocabulary.from_text("abbccc\n")
    assert v.chars[0] == "c" and v.counts[0] == 3  # most frequent first
    assert v.decode(v.encode("cab\n")) == "cab\n"
    again = Vocabulary.from_json(v.to_json())
    assert again == v
    with pytest.raises(ValueError, match="'z'"):
        v.encode("zap")


def test_stream_layout_continues_rows_and_shifts_targets():
    ids = np.arange(1000, dtype=np.int32)
    x, y = data.stream_batches(ids, batch_size=3, seq_length=7)
    n = len(x)
    assert x.shape == (n, 3, 7) and n == 999 // 21
    np.testing.assert_array_equal(y, x + 1)  # targets are inputs shifted by one
    for k in range(n - 1):  # row j of batch k+1 continues row j of batch k
        np.testing.assert_array_equal(x[k + 1][:, 0], x[k][:, -1] + 1)
    streams = x.transpose(1, 0, 2).reshape(3, -1)
    np.testing.assert_array_equal(streams[1][0], streams[0][-1] + 1)  # contiguous streams


def test_dataset_yields_batches_in_order():
    ids = np.arange(200, dtype=np.uint16)
    x, y = data.stream_batches(ids, 2, 5)
    got = [(a.numpy(), b.numpy()) for a, b in data.make_dataset(x, y, start=1)]
    assert len(got) == len(x) - 1
    np.testing.assert_array_equal(got[0][0], x[1])
    assert got[0][0].dtype == np.int32


def test_too_short_text_suggests_smaller_batch():
    with pytest.raises(ValueError, match="smaller batch_size"):
        data.stream_batches(np.arange(50), 10, 10)


def test_split_holds_out_last_fraction():
    train, val = data.split(np.arange(100), 0.1)
    assert list(val) == list(range(90, 100)) and len(train) == 90
    assert len(data.split(np.arange(100), 0.0)[1]) == 0


def test_cache_is_rebuilt_when_input_changes(data_dir):
    first = data.load_corpus(str(data_dir))
    assert (data_dir / idcache.CACHE_JSON).exists() and (data_dir / idcache.CACHE_IDS).exists()
    again = data.load_corpus(str(data_dir))  # from the cache
    assert again.vocab == first.vocab and np.array_equal(first.ids, again.ids)
    (data_dir / "input.txt").write_text("xyz" * 10, encoding="utf-8")
    changed = data.load_corpus(str(data_dir))
    assert set(changed.vocab.chars) == {"x", "y", "z"} and len(changed.ids) == 30


def test_undecodable_bytes_name_file_and_offset(tmp_path):
    (tmp_path / "input.txt").write_bytes(b"hello \xff world")
    with pytest.raises(DataError, match=r"0xff at offset 6"):
        data.load_corpus(str(tmp_path))


def test_empty_and_missing_input(tmp_path):
    (tmp_path / "input.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        data.load_corpus(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"input\.txt"):
        data.load_corpus(str(tmp_path / "nowhere"))


def test_tiny_shakespeare_download_failure_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(textfiles, "TINY_SHAKESPEARE_URL", "file:///nonexistent/input.txt")
    target = tmp_path / "tinyshakespeare"
    with pytest.raises(FileNotFoundError, match="save it as"):
        data.load_corpus(str(target))
    assert not (target / "input.txt").exists()


def test_atomic_writes_get_normal_file_permissions(tmp_path):
    import os
    import stat

    from kerasgen import atomic

    old = os.umask(0o022)
    try:
        atomic.write_text(str(tmp_path / "a.txt"), "x")
        assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644
        os.chmod(tmp_path / "a.txt", 0o600)  # a replaced file keeps its mode
        atomic.write_text(str(tmp_path / "a.txt"), "y")
        assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o600
    finally:
        os.umask(old)
