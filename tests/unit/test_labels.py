"""Label files in every common format, read the same way everywhere."""

from __future__ import annotations

import pytest

from mltool.errors import DataError
from mltool.runtime.labels import Labels

COCO_HEAD = "0  person\n1  bicycle\n2  car\n3  motorcycle\n4  airplane\n5  bus\n6  train\n7  truck\n8  boat\n" \
            "9  traffic light\n10  fire hydrant\n12  stop sign\n13  parking meter\n"  # Coral's coco_labels.txt: 11 is skipped


@pytest.mark.parametrize("text", [
    "cat\ndog\nbird\n",
    "cat\r\ndog\r\nbird",                      # CRLF, no final newline
    "\ufeffcat  \n\n dog\n\nbird\t\n\n",       # BOM, trailing whitespace, blank lines
    "0 cat\n1 dog\n2 bird\n",
    "0: cat\n1: dog\n2: bird\n",
    "0,cat\n1,dog\n2,bird\n",
    "\ufeff0:cat\r\n1 , dog\r\n\r\n2\tbird",
])
def test_formats_agree(text):
    labels = Labels.from_text(text)
    assert [labels.name(i) for i in range(3)] == ["cat", "dog", "bird"] and len(labels) == 3


def test_ids_with_gaps_never_borrow_a_neighbours_name():
    labels = Labels.from_text(COCO_HEAD)
    assert labels.name(10) == "fire hydrant" and labels.name(12) == "stop sign"
    assert labels.name(11) == "11"  # no label: the id itself
    assert labels.name(99) == "99" and labels.max_id == 13 and labels.index("stop sign") == 12


def test_names_with_spaces_and_digits_stay_whole():
    assert Labels.from_text("0 traffic light\n1 7-eleven sign\n").name(1) == "7-eleven sign"
    # a plain list whose names are numbers is a plain list (digits 0-9)
    assert Labels.from_text("\n".join(str(i) for i in range(10))).name(7) == "7"


def test_conflicting_ids_and_non_utf8(tmp_path):
    with pytest.raises(DataError, match="gives class 1 two names"):
        Labels.from_text("0 a\n1 b\n1 c\n")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\nna\xefve\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"labels file .*latin1.txt is not UTF-8 text") as e:
        Labels.from_file(bad)
    assert "iconv" in e.value.one_line()
