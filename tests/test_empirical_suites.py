import pytest

from mbbench.errors import UserError
from mbbench.suites import load_suite, make_batches, select_documents

HEADER = 'name = "mine"\nseed = 7\n'


def _suite(tmp_path, body, files=None):
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "mine.toml"
    path.write_text(HEADER + body)
    return load_suite(str(path))


def test_inline_lengths_sampled_with_the_seed(tmp_path):
    suite = _suite(tmp_path, 'documents = 50\n[lengths]\ndistribution = "empirical"\nvalues = [10, 200, 3000]\n')
    assert len(suite.lengths) == 50 and set(suite.lengths) == {10, 200, 3000}  # with replacement
    again = _suite(tmp_path, 'documents = 50\n[lengths]\ndistribution = "empirical"\nvalues = [10, 200, 3000]\n')
    assert suite.lengths == again.lengths and suite.fingerprint == again.fingerprint
    assert suite.lengths[:8] == [10, 200, 200, 3000, 200, 10, 3000, 3000]  # pinned: torch's CPU generator
    d = suite.definition
    assert (d.min_length, d.max_length, suite.max_length) == (10, 3000, 3000)
    path = tmp_path / "mine.toml"
    path.write_text(path.read_text().replace("seed = 7", "seed = 8"))
    reseeded = load_suite(str(path))
    assert reseeded.lengths != suite.lengths and reseeded.fingerprint != suite.fingerprint

def test_file_lengths_as_is_and_documents_default(tmp_path):
    files = {"lengths.txt": "# tokens per document\n120\n\n7\n4096\n"}
    suite = _suite(tmp_path, '[lengths]\ndistribution = "empirical"\nfile = "lengths.txt"\nsample = false\n', files)
    assert suite.lengths == [120, 7, 4096] and suite.definition.documents == 3
    assert suite.statistics()["total_tokens"] == 4223
    batches = make_batches(suite, select_documents(suite, None), "packed", batch_size=2)
    assert [b.real_tokens for b in batches] == [127, 4096]
    assert len(suite.document(2)) == 4096


def test_csv_with_header_column_and_clamp(tmp_path):
    files = {"docs.csv": "id,tokens\na,12\nb,9000\nc,300\n", "one.csv": "length\n5\n6\n"}
    suite = _suite(tmp_path, '[lengths]\ndistribution = "empirical"\nfile = "docs.csv"\ncolumn = "tokens"\n'
                   'max = 8192\nmin = 16\nsample = false\n', files)
    assert suite.lengths == [16, 8192, 300] and suite.definition.max_length == 8192
    single = _suite(tmp_path, '[lengths]\ndistribution = "empirical"\nfile = "one.csv"\nsample = false\n')
    assert single.lengths == [5, 6]


def test_fingerprint_covers_the_file_contents_not_its_place(tmp_path):
    body = 'documents = 20\n[lengths]\ndistribution = "empirical"\nfile = "l.txt"\n'
    first = _suite(tmp_path, body, {"l.txt": "100\n200\n"})
    changed = _suite(tmp_path, body, {"l.txt": "100\n201\n"})
    assert first.fingerprint != changed.fingerprint
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    same = _suite(moved, body, {"l.txt": "100\n200\n"})
    assert same.fingerprint == first.fingerprint and same.definition.lengths_file != first.definition.lengths_file
    inline = _suite(tmp_path, 'documents = 20\n[lengths]\ndistribution = "empirical"\nvalues = [100, 200]\n')
    assert inline.lengths == first.lengths


@pytest.mark.parametrize("body, files, message", [
    ('[lengths]\ndistribution = "empirical"\nfile = "absent.txt"', {}, r"absent.txt: lengths file not found \(field 'lengths.file' of .*mine.toml"),
    ('[lengths]\ndistribution = "empirical"\nfile = "l.txt"', {"l.txt": "# nothing\n"}, "l.txt: no lengths"),
    ('[lengths]\ndistribution = "empirical"\nfile = "l.txt"', {"l.txt": "5\n0\n"}, "l.txt line 2: '0' is not a positive"),
    ('[lengths]\ndistribution = "empirical"\nfile = "l.txt"', {"l.txt": "5\n2.5\n"}, "l.txt line 2: '2.5'"),
    ('[lengths]\ndistribution = "empirical"\nfile = "l.csv"', {"l.csv": "a,b\n1,2\n"}, "2 columns; name the lengths column"),
    ('[lengths]\ndistribution = "empirical"\nfile = "l.csv"\ncolumn = "x"', {"l.csv": "a,b\n1,2\n"}, "no column 'x'"),
    ('[lengths]\ndistribution = "empirical"\nvalues = []', {}, "'lengths.values' must be a non-empty list"),
    ('[lengths]\ndistribution = "empirical"\nvalues = [3, -1]', {}, "'lengths.values' item 1 must be a positive integer"),
    ('[lengths]\ndistribution = "empirical"\nvalues = [3, true]', {}, "'lengths.values' item 1"),
    ('[lengths]\ndistribution = "empirical"', {}, "exactly one of 'lengths.values'"),
    ('[lengths]\ndistribution = "empirical"\nvalues = [1]\nfile = "l.txt"', {}, "exactly one of"),
    ('documents = 5\n[lengths]\ndistribution = "empirical"\nvalues = [1, 2]\nsample = false', {},
     r"'documents' \(5\) must equal the number of lengths \(2\)"),
    ('[lengths]\ndistribution = "empirical"\nvalues = [1, 2]\nsample = "no"', {}, "'lengths.sample' must be true or false"),
    ('[lengths]\ndistribution = "empirical"\nvalues = [1, 2]\nmin = 9\nmax = 3', {}, "'lengths.min' \\(9\\) is greater"),
    ('[lengths]\ndistribution = "fixed"\nlength = 4', {}, "missing field 'documents'"),
])
def test_invalid_empirical_suites_name_file_and_field(tmp_path, body, files, message):
    with pytest.raises(UserError, match=message) as error:
        _suite(tmp_path, body, files)
    assert "mine.toml" in str(error.value)


def test_documented_example_suite():
    """docs/suites.md quotes these numbers."""
    from pathlib import Path

    suite = load_suite(str(Path(__file__).resolve().parent.parent / "docs/examples/support-tickets.toml"))
    stats = suite.statistics()
    assert (stats["documents"], stats["total_tokens"], stats["mean"], stats["std"]) == (2048, 1181066, 576.7, 521.9)
    assert (stats["min"], stats["max"]) == (67, 2723) and suite.fingerprint == "550b145a0e967d03"
