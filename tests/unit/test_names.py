import pytest

from dnpfs.errors import InvalidName
from dnpfs.names import check_name, decode, split_path


@pytest.mark.parametrize("name", ["jobs", "a.b-c_d", "x" * 249, "..."])
def test_valid(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250, "a b", "a/b", "é", "a@b", "a:b",
                                  "__consumer_offsets", "__dnpfs_mounts"])
def test_invalid(name):
    with pytest.raises(InvalidName):
        check_name(name)


def test_group_paths():
    assert split_path("jobs") == ("jobs", "")
    assert split_path("jobs@audit") == ("jobs", "audit")
    with pytest.raises(InvalidName):
        split_path("jobs@")
    with pytest.raises(InvalidName):
        split_path("jobs@a@b")


def test_decode_rejects_non_ascii():
    with pytest.raises(InvalidName):
        decode("é".encode())
