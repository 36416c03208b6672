#!/usr/bin/env python3
"""Build (or reuse) the lab guest: a Debian bookworm image with the kernel,
its exactly matching headers, bcc, Open vSwitch and the network tools.

Everything comes from Debian's packages (mmdebstrap, root mode).  The result is
cached under ``$NETSLEUTH_LAB_CACHE`` (default ``/var/cache/netsleuth/lab``),
keyed by the versions of every package that goes in and by the contents of
this script and of the initramfs init: when either changes, the next call
builds a new image.  The project itself is not in the image: the runner shares
the working tree with the guest over 9p, so editing the code never forces a
rebuild.

    sudo python3 -m tests.lab.build            # build if stale, print the image dir
    sudo python3 -m tests.lab.build --force    # rebuild even if a fresh image exists
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INITRAMFS_INIT = HERE / "initramfs_init.sh"

MIRROR = os.environ.get("NETSLEUTH_LAB_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("NETSLEUTH_LAB_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITE = "bookworm"
SOURCES = (
    f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main",
    # The newest kernel ABI (and its headers) is published here first.
    f"deb [signed-by={KEYRING}] {SECURITY_MIRROR} {SUITE}-security main",
)

GUEST_PACKAGES = (
    "linux-image-amd64", "linux-headers-amd64", "python3-bpfcc", "openvswitch-switch",
    "iproute2", "iputils-ping", "nftables", "kmod", "busybox-static", "python3-psutil",
    "python3-yaml", "procps", "mount",
    # The autopilot's HTML report is its Markdown rendered by markdown-it (wizard/report.py).
    "python3-markdown-it",
    # The nested VM (tests/lab/nested_vm.py): a real KVM guest with vhost-net inside the lab.
    "qemu-system-x86", "ethtool",
)

# Host tools: package -> a file that proves it is installed.
HOST_PACKAGES = {
    "mmdebstrap": "/usr/bin/mmdebstrap",
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "qemu-system-data": "/usr/share/qemu/qboot.rom",  # fast firmware for direct kernel boot
    "e2fsprogs": "/usr/sbin/mke2fs",
    "cpio": "/usr/bin/cpio",
    "debian-archive-keyring": KEYRING,
}

# Kept out of the image: documentation, translations, and drivers for hardware
# the guest does not have (the paths put back are the ones it uses).
DPKG_FILTERS = (
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/lib/modules/*/kernel/drivers/*",
    "path-include=/lib/modules/*/kernel/drivers/virtio/*",
    "path-include=/lib/modules/*/kernel/drivers/block/virtio_blk.ko",
    "path-include=/lib/modules/*/kernel/drivers/net/tun.ko",
    "path-include=/lib/modules/*/kernel/drivers/net/veth.ko",
    "path-include=/lib/modules/*/kernel/drivers/net/dummy.ko",
    "path-include=/lib/modules/*/kernel/drivers/net/ifb.ko",
    "path-include=/lib/modules/*/kernel/drivers/net/virtio_net.ko",
    "path-include=/lib/modules/*/kernel/drivers/net/net_failover.ko",
    "path-include=/lib/modules/*/kernel/drivers/net/tap.ko",  # vhost_net links against it
    "path-include=/lib/modules/*/kernel/drivers/vhost/*",
    "path-include=/lib/modules/*/kernel/drivers/crypto/ccp/*",  # kvm_amd needs its SEV symbols
    "path-exclude=/lib/modules/*/kernel/sound/*",
    # No initrd of Debian's making: the lab boots its own tiny one.
    "path-exclude=/etc/kernel/postinst.d/initramfs-tools",
    # gcc comes in through the headers' dependencies; bcc compiles with its own clang.
    "path-exclude=/usr/lib/gcc/x86_64-linux-gnu/*/cc1",
    "path-exclude=/usr/lib/gcc/x86_64-linux-gnu/*/lto1",
    "path-exclude=/usr/lib/x86_64-linux-gnu/lib*san.so.*",
)

# Loaded by the initramfs to reach the root disk and the 9p shares.
# crc32c_generic: ext4 asks for crc32c through the crypto API, which modules.dep does not show.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "9pnet_virtio", "9p")

# The guest mounts the working tree and a results directory here.
GUEST_MOUNTS = ("netsleuth", "lab")


class LabUnavailable(Exception):
    """This host cannot build or boot the lab (no network to Debian, no qemu, not root)."""


@dataclass(frozen=True)
class Image:
    dir: Path
    key: str
    kernel: Path  # uncompressed vmlinux (PVH entry: fast direct boot)
    initrd: Path
    rootfs: Path  # ext4
    release: str  # kernel release inside
    manifest: dict


def cache_root() -> Path:
    return Path(os.environ.get("NETSLEUTH_LAB_CACHE", "/var/cache/netsleuth/lab"))


def log(msg: str) -> None:
    print(f"[lab build] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, **kw)


# --- host tools ----------------------------------------------------------

def ensure_host_packages() -> None:
    """apt-get install what is missing (idempotent; nothing runs when all is there)."""
    if os.geteuid() != 0:
        raise LabUnavailable("building the lab image needs root (mmdebstrap in root mode)")
    missing = [pkg for pkg, proof in HOST_PACKAGES.items() if not Path(proof).exists()]
    if not missing:
        return
    log(f"installing host packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env, capture_output=True)
    except subprocess.CalledProcessError as e:
        raise LabUnavailable(f"could not install {' '.join(missing)} with apt: {e.stderr.strip()[-300:]}") from None


# --- what would go in: resolved package versions -------------------------

class PrivateApt:
    """apt-get with its own lists and an empty dpkg status: asks 'what would a fresh
    bookworm + bookworm-security install?' without touching the host's apt state."""

    def __init__(self, root: Path):
        self.root = root
        (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "sources.list.d").mkdir(exist_ok=True)
        (root / "preferences.d").mkdir(exist_ok=True)
        (root / "sources.list").write_text("\n".join(SOURCES) + "\n")
        (root / "status").touch()

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::State::Lists": r / "lists",
            "Dir::State::status": r / "status",
            "Dir::Cache": r / "cache",
            "Dir::Etc::SourceList": r / "sources.list",
            "Dir::Etc::SourceParts": r / "sources.list.d",
            "Dir::Etc::PreferencesParts": r / "preferences.d",
            "Dir::Etc::Preferences": r / "preferences",
            "APT::Architecture": "amd64",
            "APT::Architectures": "amd64",
            "APT::Install-Recommends": "false",
            "Debug::NoLocking": "true",
        }
        out = []
        for k, v in opts.items():
            out += ["-o", f"{k}={v}"]
        return out

    def update(self) -> None:
        try:
            run(["apt-get", *self.options(), "update", "-qq", "--error-on=any"], capture_output=True, timeout=300)
        except subprocess.CalledProcessError as e:
            errors = [line for line in e.stderr.splitlines() if line.startswith("E:")] or [e.stderr.strip()]
            raise LabUnavailable(f"cannot reach the Debian mirrors ({MIRROR}): {errors[0][:300]}") from None
        except subprocess.TimeoutExpired:
            raise LabUnavailable(f"the Debian mirrors ({MIRROR}) did not answer within 5 minutes") from None

    def resolve(self, packages: tuple[str, ...]) -> dict[str, str]:
        """name -> version of everything a fresh install of ``packages`` (+ Essential) brings.

        Remembered per state of the archive (its signed Release files), since
        asking apt takes seconds and the answer only changes with the archive."""
        h = hashlib.sha256(repr(packages).encode())
        for release in sorted((self.root / "lists").glob("*Release")):
            h.update(release.read_bytes())
        memo = self.root / "resolved.json"
        try:
            saved = json.loads(memo.read_text())
            if saved["archive"] == h.hexdigest():
                return saved["versions"]
        except (OSError, ValueError, KeyError):
            pass
        versions = self._simulate(packages)
        memo.write_text(json.dumps({"archive": h.hexdigest(), "versions": versions}))
        return versions

    def _simulate(self, packages: tuple[str, ...]) -> dict[str, str]:
        cp = run(["apt-get", *self.options(), "-s", "install", "?essential", *packages],
                 capture_output=True)
        versions = {}
        for m in re.finditer(r"^Inst (\S+) \((\S+) ", cp.stdout, re.M):
            versions[m.group(1)] = m.group(2)
        if not versions:
            raise RuntimeError(f"apt resolved nothing for {packages}:\n{cp.stdout[-2000:]}")
        return versions


def source_digest() -> str:
    """Hash of the files that shape the image (this script, the initramfs init)."""
    h = hashlib.sha256()
    for path in (Path(__file__).resolve(), INITRAMFS_INIT):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def image_key(versions: dict[str, str]) -> str:
    h = hashlib.sha256(source_digest().encode())
    for name in sorted(versions):
        h.update(f"{name}={versions[name]}\n".encode())
    return h.hexdigest()[:16]


# --- building --------------------------------------------------------------

def _kernel_release(rootfs: Path) -> str:
    releases = sorted(p.name for p in (rootfs / "lib/modules").iterdir() if (p / "modules.dep").exists())
    if len(releases) != 1:
        raise RuntimeError(f"expected one kernel in the image, found {releases}")
    return releases[0]


def check_headers_match(rootfs: Path, release: str, versions: dict[str, str]) -> None:
    """The headers package must be the one built with this very kernel."""
    image_pkg, headers_pkg = f"linux-image-{release}", f"linux-headers-{release}"
    vi, vh = versions.get(image_pkg), versions.get(headers_pkg)
    if not vi or vi != vh:
        raise RuntimeError(f"kernel/headers mismatch: {image_pkg}={vi} {headers_pkg}={vh}")
    build_link = rootfs / "lib/modules" / release / "build"
    target = Path(os.readlink(build_link))  # absolute inside the image, not on the host
    headers = rootfs / target.relative_to("/") if target.is_absolute() else build_link.parent / target
    uts = headers / "include/generated/utsrelease.h"
    text = uts.read_text() if uts.exists() else ""
    if f'"{release}"' not in text:
        raise RuntimeError(f"{uts} does not name {release}: {text.strip()!r}")


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage (boot protocol >= 2.08 payload fields)."""
    import gzip
    import lzma

    setup_sects = bzimage[0x1F1] or 4
    offset = int.from_bytes(bzimage[0x248:0x24C], "little")
    length = int.from_bytes(bzimage[0x24C:0x250], "little")
    start = (setup_sects + 1) * 512 + offset
    payload = bzimage[start:start + length]
    if payload[:2] == b"\x1f\x8b":
        elf = gzip.decompress(payload)
    elif payload[:6] == b"\xfd7zXZ\x00":
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    elif payload[:4] == b"\x28\xb5\x2f\xfd":
        elf = subprocess.run(["zstd", "-dcq"], input=payload, capture_output=True, check=True).stdout
    else:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(payload)
    if elf[:4] != b"\x7fELF":
        raise RuntimeError("the kernel payload did not decompress to an ELF image")
    return elf


def _module_paths(rootfs: Path, release: str, wanted: tuple[str, ...]) -> list[str]:
    """Module files (relative to /lib/modules/RELEASE) for ``wanted``, dependencies first."""
    base = rootfs / "lib/modules" / release
    builtin = {Path(line).stem for line in (base / "modules.builtin").read_text().split()}
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[Path(mod).name.split(".ko")[0].replace("-", "_")] = mod
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps[mod]):  # modules.dep lists the deepest dependency last
            visit(dep)
        order.append(mod)

    for name in wanted:
        if name in builtin:
            continue
        if name not in by_name:
            raise RuntimeError(f"module {name} is neither built in nor in modules.dep")
        visit(by_name[name])
    return order


def build_initramfs(rootfs: Path, release: str, out: Path, work: Path) -> None:
    """busybox + the few modules needed to mount the root disk and the 9p shares."""
    tree = work / "initramfs"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "bin").mkdir(parents=True)
    (tree / "modules").mkdir()
    shutil.copy2(rootfs / "bin/busybox", tree / "bin/busybox")
    (tree / "bin/sh").symlink_to("busybox")  # the rest are linked by /init itself
    order = []
    for rel in _module_paths(rootfs, release, INITRAMFS_MODULES):
        src = rootfs / "lib/modules" / release / rel
        shutil.copy2(src, tree / "modules" / src.name)
        order.append(src.name)
    (tree / "modules/order").write_text("\n".join(order) + "\n")
    shutil.copy2(INITRAMFS_INIT, tree / "init")
    (tree / "init").chmod(0o755)
    files = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    with open(out, "wb") as f:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=tree, input=files,
                       stdout=f, check=True)


def mmdebstrap(rootfs: Path, debs: Path) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    cmd = ["mmdebstrap", "--mode=root", "--variant=essential", "--format=directory", "--quiet",
           "--include=" + ",".join(GUEST_PACKAGES),
           *(f"--dpkgopt={f}" for f in DPKG_FILTERS),
           # Reuse downloaded .debs between builds (only changed packages are fetched).
           "--skip=essential/unlink",
           "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
           f"--setup-hook=sync-in {debs} /var/cache/apt/archives/",
           f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
           "--customize-hook=mkdir -p " + " ".join(f'"$1"/{m}' for m in GUEST_MOUNTS),
           "--customize-hook=echo lab > \"$1\"/etc/hostname",
           SUITE, str(rootfs), *SOURCES]
    run(cmd)


def prune_debs(debs: Path, versions: dict[str, str]) -> None:
    """Drop cached .debs of versions no longer wanted, so the cache does not grow forever."""
    keep = {f"{n}_{v.replace(':', '%3a')}" for n, v in versions.items()}
    for deb in debs.glob("*.deb"):
        if deb.name.rsplit("_", 1)[0] not in keep:
            deb.unlink()


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def build(key: str, versions: dict[str, str]) -> Image:
    root = cache_root()
    work = root / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rootfs = work / "rootfs"
    timings = {}
    t0 = time.monotonic()
    log(f"mmdebstrap {SUITE} -> {rootfs} ({len(versions)} packages)")
    mmdebstrap(rootfs, root / "debs")
    prune_debs(root / "debs", versions)
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
    timings["mmdebstrap_s"] = round(time.monotonic() - t0, 1)
    return finish(rootfs, key, versions, timings)


def finish(rootfs: Path, key: str, versions: dict[str, str], timings: dict) -> Image:
    """Kernel, initramfs and ext4 image from the populated root directory."""
    root = cache_root()
    work = rootfs.parent
    release = _kernel_release(rootfs)
    check_headers_match(rootfs, release, versions)
    out = root / "images" / (key + ".tmp")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    t1 = time.monotonic()
    (out / "vmlinux").write_bytes(extract_vmlinux((rootfs / "boot" / f"vmlinuz-{release}").read_bytes()))
    build_initramfs(rootfs, release, out / "initrd.cpio", work)
    # The guest loads modules from the image, and bcc finds the headers there too.
    size_mb = du_bytes(rootfs) * 13 // 10 // 2**20 + 512
    run(["mke2fs", "-q", "-t", "ext4", "-O", "^has_journal", "-m", "0", "-L", "netsleuth-lab",
         "-E", "root_owner=0:0", "-d", str(rootfs), str(out / "rootfs.ext4"), f"{size_mb}M"],
        stdout=subprocess.DEVNULL)
    timings["image_s"] = round(time.monotonic() - t1, 1)
    manifest = {
        "key": key,
        "release": release,
        "source_digest": source_digest(),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rootfs_mb": du_bytes(rootfs) // 2**20,
        "image_mb": size_mb,
        "timings": timings,
        "packages": versions,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    shutil.rmtree(work)
    final = root / "images" / key
    shutil.rmtree(final, ignore_errors=True)
    out.rename(final)
    log(f"built {final}: {timings}")
    return load_image(final)


def load_image(path: Path) -> Image:
    manifest = json.loads((path / "manifest.json").read_text())
    return Image(path, manifest["key"], path / "vmlinux", path / "initrd.cpio", path / "rootfs.ext4",
                 manifest["release"], manifest)


def _images() -> list[Path]:
    base = cache_root() / "images"
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if (p / "manifest.json").exists() and not p.name.endswith(".tmp")]
    return sorted(found, key=lambda p: (p / "manifest.json").stat().st_mtime, reverse=True)


KEEP_IMAGES = 3  # several checkouts (branches) on one machine each keep theirs


def _remove_old_images(keep: str) -> None:
    others = [path for path in _images() if path.name != keep]
    for path in others[KEEP_IMAGES - 1:]:
        shutil.rmtree(path, ignore_errors=True)


def ensure_image(force: bool = False) -> Image:
    """The current lab image, built first when missing or stale.

    Raises LabUnavailable when this host cannot build one (and has none usable)."""
    if not platform.machine() in ("x86_64", "AMD64"):
        raise LabUnavailable(f"the lab image is amd64; this host is {platform.machine()}")
    ensure_host_packages()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per machine
        apt = PrivateApt(root / "apt")
        try:
            apt.update()
        except LabUnavailable as offline:
            # Offline: an image from this same script is still good to test with.
            for path in _images():
                if load_image(path).manifest.get("source_digest") == source_digest():
                    log(f"{offline}; using the cached image {path.name} without checking for updates")
                    return load_image(path)
            raise
        versions = apt.resolve(GUEST_PACKAGES)
        key = image_key(versions)
        path = root / "images" / key
        if not force and (path / "manifest.json").exists():
            return load_image(path)
        image = build(key, versions)
        _remove_old_images(keep=key)
        return image


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when a fresh image is cached")
    args = ap.parse_args(argv)
    try:
        image = ensure_image(force=args.force)
    except LabUnavailable as e:
        print(f"lab unavailable: {e}", file=sys.stderr)
        return 3
    print(image.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
