"""datasets.metadata.read_tsv: delimited tables with a header line, errors naming the file and line."""

import pytest

from datasets.metadata import LayoutError, read_tsv


def _write(tmp_path, text, name="table.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


@pytest.mark.parametrize("delimiter", ["\t", ",", ";"])
def test_rows_are_keyed_by_the_header_whatever_the_delimiter(tmp_path, delimiter):
    text = delimiter.join(["Filename", "label"]) + "\n" + delimiter.join(["a.wav", "dog"]) + "\n\n"
    text += delimiter.join(["b.wav", " cat "]) + "\n"
    rows = read_tsv(_write(tmp_path, text), ("filename", "label"), delimiter=delimiter)
    assert rows == [{"filename": "a.wav", "label": "dog"}, {"filename": "b.wav", "label": "cat"}]
    assert [row.line for row in rows] == [2, 4]  # the blank line 3 is skipped but counted


def test_line_numbers_count_the_lines_of_quoted_cells(tmp_path):
    text = 'filename,label\r\n"a.wav","two\r\nlines"\r\nb.wav,x\r\n'
    rows = read_tsv(_write(tmp_path, "\ufeff" + text), ("filename", "label"), delimiter=",")
    assert rows[0]["label"] == "two\nlines"
    assert [row.line for row in rows] == [3, 4]


@pytest.mark.parametrize(
    "header, separator", [("filename\tlabel,x", "\t"), ("filename,label", ","), ("filename", "\t")]
)
def test_candidate_delimiters_take_the_first_found_in_the_header(tmp_path, header, separator):
    row = separator.join(["a.wav", "dog", "1"][: header.count(separator) + 1])
    (found,) = read_tsv(_write(tmp_path, f"{header}\n{row}\n"), ("filename",), delimiter="\t,")
    assert list(found.values()) == row.split(separator)


@pytest.mark.parametrize(
    "text, delimiter, message",
    [
        ("filename,label\na.wav,dog\nb.wav\n", ",", r"table.csv line 3: 1 comma-separated fields, expected 2"),
        ("filename\tlabel\na.wav\tdog\tx\ty\n", "\t", r"table.csv line 2: 4 tab-separated fields, expected 2"),
        (
            "filename,label\na.wav,dog\n",
            "\t",
            r"lacks the columns \['filename', 'label'\]\. Columns must be .* tabs, not commas",
        ),
        ("filename;label\n", "\t,", r"Columns must be separated by tabs or commas, not semicolons"),
        ("filename,label,Label\n", ",", r"names the columns \['label'\] more than once"),
        ("\n \n", ",", r"table.csv is empty; expected a header line with the columns \['filename', 'label'\]"),
    ],
)
def test_format_errors_name_the_file_and_line(tmp_path, text, delimiter, message):
    with pytest.raises(LayoutError, match=message):
        read_tsv(_write(tmp_path, text), ("filename", "label"), delimiter=delimiter)


def test_other_columns_may_repeat_and_text_must_be_utf8(tmp_path):
    rows = read_tsv(_write(tmp_path, "filename,note,note\na.wav,x,y\n"), ("filename",), delimiter=",")
    assert rows[0]["filename"] == "a.wav"
    path = tmp_path / "latin1.csv"
    path.write_bytes("filename\n\xe9t\xe9.wav\n".encode("latin-1"))
    with pytest.raises(LayoutError, match="latin1.csv is not UTF-8 text"):
        read_tsv(path, ("filename",))
