"""Starting a container's process with its volumes at their real paths, in a private mount namespace.

    python -I mountns.py START_FD PLAN_JSON -- ARGV...

A kubelet's container sees each volume at its `mountPath` (the ServiceAccount token at
/var/run/secrets/kubernetes.io/serviceaccount, an emptyDir at /tmp), and programs open those
paths literally: the Kubernetes client reads its token there, and no rewriting of the command
line reaches that. The node agent runs containers as host processes, so this small program,
started in the container's place, gives the process its own view of the host's tree and then
execs the container's command (same pid, same process group):

1. a new mount namespace, every mount made private (nothing propagates back to the host);
2. a new root on a tmpfs with every top-level host entry bind-mounted into it (recursively),
   then chroot: the host's files are all there, but a missing mount point (/data, or
   /var/run/secrets/...) is created in tmpfs, never on the host. Where a mount point's parent
   is a host directory (/run, /etc), that directory is *mirrored* first: a tmpfs over it holding
   a bind mount of each of its entries, so the new directory exists only in this namespace;
3. each volume bind-mounted onto its mount path, parents first, read-only when the volume mount
   says so (a bind, then a read-only remount, as runc does). Sources are opened before anything
   is mounted, so a volume mounted over /tmp does not hide the host directories of the others;
4. the image's own directories (the plan's `image`: the interpreter and the code it imports) bound
   back where a volume covers them: an emptyDir at /tmp hides nothing of a repository under /tmp;
5. the working directory (`workingDir`, made like a mount point when missing; "/" by default,
   the private tmpfs root, as for an image without WORKDIR), then exec.

Nothing needs cleaning up: the namespace, with every mount in it, ends with its last process.

The agent passes START_FD, the write end of a close-on-exec pipe: an exec that succeeds closes
it with nothing written; a failure (a mount refused, the command not found) writes one line
saying why, so that the agent reports a StartError as a kubelet does, and exits 128.

Standard library only, run by path with `-I`: the container's PYTHONPATH is the container's.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.chroot.argtypes = [ctypes.c_char_p]


class MountError(Exception):
    """The container's mounts cannot be set up as its spec asks."""


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise MountError(f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    rc = _libc.mount(source.encode() if source else None, target.encode(),
                     fstype.encode() if fstype else None, flags, data.encode() if data else None)
    _check(rc, f"mount {source or ''} on {target}")


def _tmpfs_like(path: str, like: os.stat_result) -> None:
    _mount("tmpfs", path, "tmpfs", 0, f"mode={like.st_mode & 0o7777:o},uid={like.st_uid},gid={like.st_gid}")


def _populate(stage: str, source: str) -> None:
    """Give the tmpfs at ``stage`` every entry of ``source``: symlinks copied, the rest bind-mounted."""
    with os.scandir(source) as entries:
        for e in entries:
            src, dst = os.path.join(source, e.name), os.path.join(stage, e.name)
            if e.is_symlink():
                os.symlink(os.readlink(src), dst)
            elif e.is_dir(follow_symlinks=False):
                os.mkdir(dst)
                _mount(src, dst, None, MS_BIND | MS_REC)
            else:
                with open(dst, "x"):
                    pass
                _mount(src, dst, None, MS_BIND)


class Root:
    """The container's tree (in a new mount namespace): a tmpfs root holding the host's entries, chrooted
    into, and the directories made in this namespace."""

    def __init__(self, root: str) -> None:
        self.private = {"/"}  # directories whose new entries land in this namespace's tmpfs
        self.mirrors = 0
        _tmpfs_like(root, os.stat("/"))
        _populate(root, "/")
        _check(_libc.chroot(root.encode()), f"chroot {root}")
        os.chdir("/")
        # The recursive bind of the host's top directory holding `root` copied the new root into itself.
        _libc.umount2(root.encode(), MNT_DETACH)

    def _mirror(self, directory: str) -> None:
        self.mirrors += 1
        stage = f"/.cardeval-mirror-{self.mirrors}"
        os.mkdir(stage)
        _tmpfs_like(stage, os.stat(directory))
        _populate(stage, directory)
        _mount(stage, directory, None, MS_MOVE)
        os.rmdir(stage)
        self.private.add(directory)

    def mount_point(self, path: str, directory: bool) -> None:
        """Make ``path`` exist (a directory, or a file for a file source) without writing to the host."""
        if os.path.lexists(path):
            if os.path.isdir(path) != directory:
                kind = "directory" if directory else "file"
                raise MountError(f"mount point {path}: not a {kind}, as its source is")
            return
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            self.mount_point(parent, True)
        parent = os.path.realpath(parent)
        if parent not in self.private:
            self._mirror(parent)
        target = os.path.join(parent, os.path.basename(path))
        if directory:
            os.mkdir(target)
            self.private.add(target)
        else:
            with open(target, "x"):
                pass

    def bind(self, fd: int, target: str, read_only: bool) -> None:
        directory = os.path.isdir(f"/proc/self/fd/{fd}")
        self.mount_point(target, directory)
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        if read_only:
            _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        elif directory:
            # the volume is the pod's: mount points below it are made in it, as runc makes nested ones
            self.private.add(target)


def setup(plan: dict) -> None:
    """Enter the namespace ``plan`` describes: {"root", "mounts": [{"source", "target", "readOnly"}], "cwd",
    "image": [host directories]}."""
    mounts = sorted(plan["mounts"], key=lambda m: os.path.normpath(m["target"]).count("/"))
    for m in mounts:
        if not os.path.isabs(m["target"]) or os.path.normpath(m["target"]) == "/":
            raise MountError(f"mount path {m['target']!r}: must be an absolute path below /")
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Opened in this namespace (a bind's source must be one of its mounts), before any mount can hide them.
    fds = [os.open(m["source"], os.O_PATH | os.O_CLOEXEC) for m in mounts]
    targets = [os.path.normpath(m["target"]) for m in mounts]
    covered = [p for p in plan.get("image") or [] if any(p == t or p.startswith(t + "/") for t in targets)]
    image_fds = [os.open(p, os.O_PATH | os.O_CLOEXEC) for p in covered]
    root = Root(plan["root"])
    for fd, m, target in zip(fds, mounts, targets, strict=True):
        root.bind(fd, target, bool(m.get("readOnly")))
        os.close(fd)
    for fd, path in sorted(zip(image_fds, covered, strict=True), key=lambda fp: fp[1].count("/")):
        root.bind(fd, path, False)
        os.close(fd)
    cwd = os.path.normpath(plan.get("cwd") or "/")
    root.mount_point(cwd, True)
    os.chdir(cwd)


def main(argv: list[str]) -> int:
    start_fd, plan = int(argv[0]), json.loads(argv[1])
    command = argv[3:]  # after "--"
    os.set_inheritable(start_fd, False)
    try:
        setup(plan)
    except (MountError, OSError) as e:
        os.write(start_fd, f"mounting volumes: {e}\n".encode())
        return 128
    try:
        os.execvp(command[0], command)
    except OSError as e:
        os.write(start_fd, f"exec: {command[0]!r}: {e.strerror or e}\n".encode())
    return 128


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
