"""Free-tier policy: which instance types, AMIs and disk sizes a create may use.

Pure logic over a `Catalog` (what EC2 reported once, cached in SQLite); nothing here spawns a
process. `Catalog.fetch` is the only part that asks EC2, and it does so in three `aws` calls.
"""

import asyncio
import logging
from dataclasses import dataclass, field

from app.core.clock import age_seconds
from app.core.errors import PolicyViolation

log = logging.getLogger("ec2_creator.free_tier")

MIN_STORAGE_GB = 8
MAX_STORAGE_GB = 30  # the free-tier EBS allowance

# alias -> {architecture: public SSM parameter holding the region's current AMI id}
ALIASES: dict[str, dict[str, str]] = {
    "amazon-linux-2023": {
        "x86_64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
        "arm64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
    },
    "amazon-linux-2": {
        "x86_64": "/aws/service/ami-amazon-linux-latest/amzn2-ami-hvm-x86_64-gp2",
        "arm64": "/aws/service/ami-amazon-linux-latest/amzn2-ami-hvm-arm64-gp2",
    },
    "ubuntu-24.04": {
        "x86_64": "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
        "arm64": "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id",
    },
    "ubuntu-22.04": {
        "x86_64": "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
        "arm64": "/aws/service/canonical/ubuntu/server/22.04/stable/current/arm64/hvm/ebs-gp2/ami-id",
    },
    "debian-12": {
        "x86_64": "/aws/service/debian/release/bookworm/latest/amd64",
        "arm64": "/aws/service/debian/release/bookworm/latest/arm64",
    },
}
ALIAS_LOGIN_USER = {"amazon-linux-2023": "ec2-user", "amazon-linux-2": "ec2-user",
                    "ubuntu-24.04": "ubuntu", "ubuntu-22.04": "ubuntu", "debian-12": "admin"}


def login_user_for(image_name: str | None, alias: str | None = None) -> str:
    """The default SSH user of an AMI: from its alias, else guessed from the image name."""
    if alias:
        return ALIAS_LOGIN_USER[alias]
    name = (image_name or "").lower()
    if "ubuntu" in name:
        return "ubuntu"
    if "debian" in name:
        return "admin"
    return "ec2-user"


def architecture_of(supported: list[str]) -> str:
    return "arm64" if "arm64" in supported else "x86_64"


@dataclass(frozen=True)
class AmiInfo:
    ami_id: str
    architecture: str
    root_device_name: str
    login_user: str
    alias: str | None = None
    image_name: str | None = None


@dataclass
class Catalog:
    """AMIs (by id and by alias+architecture) and free-tier instance types of the region."""

    amis: dict[str, AmiInfo] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # free-tier type -> architecture
    resolved_at: str | None = None

    @property
    def by_alias(self) -> dict[tuple[str, str], AmiInfo]:
        return {(a.alias, a.architecture): a for a in self.amis.values() if a.alias}

    def is_fresh(self, ttl_hours: float) -> bool:
        if not self.resolved_at or not self.types:
            return False
        return age_seconds(self.resolved_at) < ttl_hours * 3600

    @classmethod
    def from_rows(cls, amis: list[dict], types: list[dict], resolved_at: str | None) -> "Catalog":
        return cls(
            amis={a["ami_id"]: AmiInfo(a["ami_id"], a["architecture"], a["root_device_name"], a["login_user"],
                                       a.get("alias"), a.get("image_name")) for a in amis},
            types={t["name"]: t["architecture"] for t in types},
            resolved_at=resolved_at,
        )

    def to_rows(self) -> tuple[list[dict], list[dict]]:
        amis = [a.__dict__.copy() for a in self.amis.values()]
        types = [{"name": n, "architecture": arch} for n, arch in self.types.items()]
        return amis, types

    @classmethod
    async def fetch(cls, aws, free_tier_amis: list[str]) -> "Catalog":
        """Ask EC2 once: free-tier types, alias parameters, then those images (3 `aws` calls)."""
        names = [param for per_arch in ALIASES.values() for param in per_arch.values()]
        types_doc, params_doc = await asyncio.gather(
            aws.run("describe_instance_types.sh"),
            aws.run("get_ssm_parameters.sh", *names),
        )
        types = {t["InstanceType"]: architecture_of(t.get("ProcessorInfo", {}).get("SupportedArchitectures", []))
                 for t in types_doc.get("InstanceTypes", [])}
        alias_of_param = {param: (alias, arch) for alias, per_arch in ALIASES.items()
                          for arch, param in per_arch.items()}
        alias_of_ami: dict[str, str] = {}
        for param in params_doc.get("Parameters", []):
            if param.get("Name") in alias_of_param and str(param.get("Value", "")).startswith("ami-"):
                alias_of_ami[param["Value"]] = alias_of_param[param["Name"]][0]
        ids = sorted(set(alias_of_ami) | set(free_tier_amis))
        amis: dict[str, AmiInfo] = {}
        if ids:
            images = await aws.run("describe_images.sh", *ids)
            for image in images.get("Images", []):
                ami_id = image["ImageId"]
                alias = alias_of_ami.get(ami_id)
                amis[ami_id] = AmiInfo(
                    ami_id=ami_id,
                    architecture=image.get("Architecture", "x86_64"),
                    root_device_name=image.get("RootDeviceName") or "/dev/xvda",
                    login_user=login_user_for(image.get("Name"), alias),
                    alias=alias,
                    image_name=image.get("Name"),
                )
        missing = set(free_tier_amis) - set(amis)
        if missing:
            log.warning("FREE_TIER_AMIS not found in this region: %s", ", ".join(sorted(missing)))
        return cls(amis=amis, types=types)


def check_static(allowed_types: list[str], instance_type: str, storage_gb: int) -> None:
    """The checks that need no catalogue: configured types and the EBS allowance."""
    if instance_type not in allowed_types:
        raise PolicyViolation(
            f"Instance type {instance_type!r} is not allowed: free-tier types here are "
            f"{', '.join(allowed_types)} (ALLOWED_INSTANCE_TYPES).", code="instance_type_not_allowed")
    if not MIN_STORAGE_GB <= storage_gb <= MAX_STORAGE_GB:
        raise PolicyViolation(
            f"storage_gb must be between {MIN_STORAGE_GB} and {MAX_STORAGE_GB} GB (the free-tier EBS "
            f"allowance is {MAX_STORAGE_GB} GB); got {storage_gb}.", code="storage_not_free_tier")


def check_create(catalog: Catalog, allowed_types: list[str], ami: str, instance_type: str,
                 storage_gb: int) -> AmiInfo:
    """The whole policy: return the AMI to launch, or raise PolicyViolation (400) saying why not."""
    check_static(allowed_types, instance_type, storage_gb)
    return check_catalog(catalog, allowed_types, ami, instance_type)


SANDBOX_PLACE = "in the local sandbox (it publishes only Amazon Linux AMIs)"


def check_catalog(catalog: Catalog, allowed_types: list[str], ami: str, instance_type: str,
                  place: str = "in this region") -> AmiInfo:
    """What EC2 reported (free-tier types, AMIs of the region), once check_static has passed. `place` names
    the target in messages: the region, or SANDBOX_PLACE; only aliases it resolves are suggested."""
    if instance_type not in catalog.types:
        raise PolicyViolation(
            f"EC2 does not report {instance_type!r} as free-tier eligible {place}; use one of "
            f"{', '.join(sorted(set(allowed_types) & set(catalog.types))) or 'none (check the region)'}.",
            code="instance_type_not_free_tier")
    arch = catalog.types[instance_type]
    published = sorted({a for a, ar in catalog.by_alias if ar == arch})
    if ami in ALIASES:
        info = catalog.by_alias.get((ami, arch))
        if info is None:
            raise PolicyViolation(
                f"AMI alias {ami!r} is not published for {arch} {place}; try "
                f"{', '.join(published) or 'an AMI id from FREE_TIER_AMIS'}.", code="ami_alias_unavailable")
        return info
    info = catalog.amis.get(ami)
    if info is None:
        aliases = ", ".join(published) if published else "none resolves here"
        raise PolicyViolation(
            f"AMI {ami!r} is not a known free-tier AMI {place}. Use an alias ({aliases}), an id one of them "
            "resolves to, or add the id to FREE_TIER_AMIS.", code="ami_not_free_tier")
    if info.architecture != arch:
        raise PolicyViolation(
            f"AMI {ami} is {info.architecture} but {instance_type} is {arch}; pick a matching AMI or type.",
            code="architecture_mismatch")
    return info
