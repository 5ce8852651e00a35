"""Unit tests of the free-tier policy (pure logic over a hand-made catalogue)."""

import pytest

from app.core.errors import PolicyViolation
from app.instances.free_tier import AmiInfo, Catalog, check_create, login_user_for

ALLOWED = ["t3.micro", "t4g.micro"]
AL_X86 = AmiInfo("ami-0aaaaaaaaaaaaaaa1", "x86_64", "/dev/xvda", "ec2-user", "amazon-linux-2023")
AL_ARM = AmiInfo("ami-0aaaaaaaaaaaaaaa2", "arm64", "/dev/xvda", "ec2-user", "amazon-linux-2023")
UBUNTU = AmiInfo("ami-0bbbbbbbbbbbbbbb1", "x86_64", "/dev/sda1", "ubuntu", "ubuntu-24.04")
LISTED = AmiInfo("ami-0ccccccccccccccc1", "x86_64", "/dev/sda1", "admin", None, "debian-12-amd64-2026")
CATALOG = Catalog(amis={a.ami_id: a for a in (AL_X86, AL_ARM, UBUNTU, LISTED)},
                  types={"t3.micro": "x86_64", "t4g.micro": "arm64", "t3.small": "x86_64"})


def code_of(**kw) -> str:
    args = {"ami": "amazon-linux-2023", "instance_type": "t3.micro", "storage_gb": 8} | kw
    with pytest.raises(PolicyViolation) as err:
        check_create(CATALOG, ALLOWED, **args)
    assert err.value.status_code == 400 and err.value.detail
    return err.value.code


def test_alias_resolves_per_architecture():
    assert check_create(CATALOG, ALLOWED, "amazon-linux-2023", "t3.micro", 8) is AL_X86
    assert check_create(CATALOG, ALLOWED, "amazon-linux-2023", "t4g.micro", 8) is AL_ARM


def test_ubuntu_keeps_its_own_root_device_and_user():
    info = check_create(CATALOG, ALLOWED, "ubuntu-24.04", "t3.micro", 30)
    assert info.root_device_name == "/dev/sda1" and info.login_user == "ubuntu"


def test_listed_ami_id_is_accepted():
    assert check_create(CATALOG, ALLOWED, LISTED.ami_id, "t3.micro", 8) is LISTED


def test_type_outside_allowed_list():
    assert code_of(instance_type="t2.micro") == "instance_type_not_allowed"


def test_type_allowed_but_not_free_tier_in_region():
    assert code_of(instance_type="t3.small") == "instance_type_not_allowed"
    with pytest.raises(PolicyViolation) as err:
        check_create(Catalog(amis=CATALOG.amis, types={"t4g.micro": "arm64"}), ALLOWED, "amazon-linux-2023",
                     "t3.micro", 8)
    assert err.value.code == "instance_type_not_free_tier"


@pytest.mark.parametrize("size", [0, 7, 31, 1000])
def test_storage_outside_the_allowance(size):
    assert code_of(storage_gb=size) == "storage_not_free_tier"


def test_unknown_ami_and_unpublished_alias():
    assert code_of(ami="ami-0123456789abcdef0") == "ami_not_free_tier"
    assert code_of(ami="ubuntu-24.04", instance_type="t4g.micro") == "ami_alias_unavailable"


def test_messages_name_the_place_and_suggest_only_published_aliases():
    with pytest.raises(PolicyViolation) as err:
        check_create(CATALOG, ALLOWED, "windows-2022", "t4g.micro", 8)
    assert "in this region" in err.value.detail  # the default place
    assert "amazon-linux-2023" in err.value.detail and "ubuntu" not in err.value.detail  # none for arm64 here


def test_architecture_mismatch():
    assert code_of(ami=AL_ARM.ami_id) == "architecture_mismatch"


@pytest.mark.parametrize("name, alias, user", [
    ("ubuntu/images/hvm-ssd/ubuntu-noble-24.04-amd64-server", None, "ubuntu"),
    ("debian-12-amd64-20260101", None, "admin"),
    ("al2023-ami-2023.1-kernel-6.1-x86_64", None, "ec2-user"),
    (None, "debian-12", "admin"),
])
def test_login_user(name, alias, user):
    assert login_user_for(name, alias) == user


def test_catalogue_rows_round_trip():
    amis, types = CATALOG.to_rows()
    back = Catalog.from_rows(amis, types, "2026-01-01T00:00:00.000000Z")
    assert back.amis == CATALOG.amis and back.types == CATALOG.types
    assert not back.is_fresh(24)
