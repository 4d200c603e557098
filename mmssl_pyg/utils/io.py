r"""Safe file output: atomic writes, output-path checks, stale temporary files, folder locks.

Every file the library writes goes through :func:`atomic_write`: the content goes to a
temporary file in the same folder (``.<name>.<pid>.<token>.tmp``), is flushed to disk, and
replaces the target with :func:`os.replace`. A reader therefore sees the previous complete file
or the new one, never a half-written one, even when the process is killed or the disk fills
up. Temporary files of killed processes are removed by :func:`clean_stale_tmp` at the next
start.

A run folder is used by one process at a time: :class:`FolderLock` holds an ``flock`` on
``.lock`` (which records the owner's pid, host and start time) and refuses a folder that another
live process holds; a lock left by a process that no longer runs is replaced, atomically.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from glob import escape as glob_escape
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = '.lock'
_TMP = re.compile(r'^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$')
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OutputError(ValueError, OSError):
    """An output cannot be written where asked (exists, is a folder or a link, disk full...).

    The message names the path, the problem and the fix. It is a :class:`ValueError` (a user
    error, reported by the command line without a traceback) and an :class:`OSError`."""


class FolderLockedError(OutputError):
    """Another live process holds the folder's lock."""


def describe_os_error(err: OSError, path: str | os.PathLike, action: str) -> str:
    """``'<action> <path>: <reason>. Fix: ...'`` for an :class:`OSError` (disk full, no
    permission, read-only file system, a folder where a file is expected, ...)."""
    path = str(getattr(err, 'filename', None) or path)
    if err.errno in _NO_SPACE:
        return (f'{action} {path}: no space left on device. Fix: free disk space (or write '
                f'elsewhere) and run the command again; existing files were left unchanged')
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f'{action} {path}: permission denied ({err.strerror}). Fix: choose a writable '
                f'location or fix the permissions')
    if err.errno == errno.EISDIR:
        return f'{action} {path}: is a folder, not a file. Fix: give a file path'
    if err.errno == errno.ENOTDIR:
        return (f'{action} {path}: a part of the path is a file, not a folder. Fix: choose a '
                f'path whose parent folders are folders')
    return f'{action} {path}: {err.strerror or err}'


def describe_load_error(err: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` refused a file."""
    text = str(err)
    m = re.search(r'GLOBAL (\S+)', text)
    if m is not None:
        return (f'it asks for {m.group(1)}; only tensors and plain containers are ever '
                f'unpickled, because anything else could run code')
    lines = [ln.strip() for ln in text.split('WeightsUnpickler error:')[-1].splitlines()
             if ln.strip()]
    if 'WeightsUnpickler error:' in text and lines:
        return f'not a file of tensors and plain containers ({lines[0][:200]})'
    if 'magic number' in text:
        return f'not a PyTorch file ({lines[0][:200]})'
    # torch's own text ("PytorchStreamReader failed reading zip archive: failed finding
    # central directory. This is an internal miniz error...", or a bare number) says nothing
    # a user can act on: name what it means instead.
    if any(s in text for s in ('central directory', 'PytorchStreamReader', 'zip archive')):
        return ('not a complete PyTorch file: truncated, damaged or another format (its zip '
                'archive is cut off or corrupt: an interrupted copy or a full disk?)')
    if 'invalid load key' in text or text.strip().isdigit() or not text.strip():
        return ('not a complete PyTorch file: truncated, damaged or another format (it is not '
                'a zip archive or a pickle: another kind of file under a .pt name)')
    detail = lines[0][:200] if lines else type(err).__name__
    return f'not a complete PyTorch file: truncated, damaged or another format ({detail})'


def _tmp_path(path: Path) -> Path:
    return path.with_name(f'.{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp')


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None] | bytes | str,
                 binary: bool = True) -> Path:
    r"""Write ``path`` atomically (temporary file in the same folder, fsync, :func:`os.replace`).

    The parent folder is created when missing. A symbolic link at ``path`` is replaced by the
    file (its target is never written through).

    Args:
        path: the file to write.
        write: the content (``bytes`` / ``str``) or a function that writes to the open file.
        binary: open the temporary file in binary mode (for a ``write`` function).

    Raises:
        OutputError: when the file cannot be written (disk full, permissions, ...); ``path``
            then still holds its previous content and no temporary file is left.
    """
    path = Path(path)
    if isinstance(write, str):
        data, binary = write, False
        write = lambda f: f.write(data)  # noqa: E731
    elif isinstance(write, bytes):
        data_b, binary = write, True
        write = lambda f: f.write(data_b)  # noqa: E731
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(describe_os_error(err, path.parent, 'cannot create folder')) from err
    _remove_dead_tmp(path)
    tmp = _tmp_path(path)
    try:
        with open(tmp, 'wb' if binary else 'w', newline=None if binary else '') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _unlink_quietly(tmp)
        raise OutputError(describe_os_error(err, path, 'cannot write')) from err
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def _remove_dead_tmp(path: Path) -> None:
    """Remove temporary files of ``path`` left by writers that were killed."""
    for p in path.parent.glob(f'.{glob_escape(path.name)}.*.tmp'):
        m = _TMP.match(p.name)
        if m is not None and m.group('name') == path.name and p.is_file() and \
                not pid_alive(int(m.group('pid'))):
            _unlink_quietly(p)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def clean_stale_tmp(folder: str | os.PathLike, all_tmp: bool = False) -> list[Path]:
    """Remove temporary files that killed writers left in ``folder`` (not recursive).

    Args:
        folder: the folder to clean.
        all_tmp: remove every ``.*.tmp`` file (for a folder this process holds locked);
            otherwise only those of :func:`atomic_write` whose writer process is gone.

    Returns:
        The removed paths.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        name = p.name
        if not (name.startswith('.') and name.endswith('.tmp')) or not p.is_file() \
                or p.is_symlink():
            continue
        m = _TMP.match(name)
        if all_tmp or (m is not None and int(m.group('pid')) != os.getpid()
                       and not pid_alive(int(m.group('pid')))):
            _unlink_quietly(p)
            removed.append(p)
    return removed


def check_output_file(path: str | os.PathLike, force: bool = False,
                      suffixes: tuple[str, ...] | None = None, option: str = '--output') -> Path:
    r"""Check, before any work, that a file can be written at ``path``.

    Refused with :class:`OutputError`: a folder, a symbolic link (never followed), an existing
    file unless ``force``, a parent path that is a file, an unwritable folder, a suffix not in
    ``suffixes``.
    """
    p = Path(path)
    where = f'{option} {str(path)!r}'
    if str(path) == '' or p.name in ('', '.', '..'):
        raise OutputError(f'{where}: not a file name. Fix: give a file path such as recs.csv')
    if p.is_symlink():
        raise OutputError(f'{where} is a symbolic link (to {os.readlink(p)!r}); links are '
                          f'never written through. Fix: give the real file path')
    if p.is_dir():
        raise OutputError(f'{where} is a folder. Fix: give a file path inside it, e.g. '
                          f'{str(p / "recommendations.csv")!r}')
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise OutputError(f'{where}: unsupported type {p.suffix.lower() or "(none)"!r}; use '
                          f'{" or ".join(suffixes)}')
    if p.exists() and not force:
        raise OutputError(f'{where} already exists. Fix: pass --force to replace it, or choose '
                          f'another file')
    check_folder(p.parent, f'{where}: the folder',
                 'choose a file whose parent folders are folders (missing ones are created)')
    return p


def check_folder(path: str | os.PathLike, option: str = '--run-dir',
                 fix: str = 'give a folder path: a new folder or an existing run folder') -> Path:
    """Raise :class:`OutputError` when ``path`` (or a parent) exists but is not a folder, or
    when the folder (or its nearest existing parent) is not writable."""
    if str(path).strip() == '':
        raise OutputError(f'{option} is empty: it would name the current folder. Fix: {fix}')
    p = Path(path)
    probe = p
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        what = 'is a file' if probe == p else f'is inside {str(probe)!r}, which is a file'
        raise OutputError(f'{option} {str(path)!r} {what}, not a folder. Fix: {fix}')
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f'{option} {str(path)!r}: folder {str(probe)!r} is not writable. '
                          f'Fix: choose a writable location')
    return p


def _try_flock(fd: int, wait: float = 0.0) -> bool:
    """An exclusive ``flock`` on ``fd``, retried for ``wait`` seconds: whether it was
    granted."""
    if fcntl is None:  # pragma: no cover - no flock (Windows): O_EXCL creation only
        return True
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _process_start(pid: int) -> str | None:
    """Start time of a process (Linux ``/proc``), to tell a reused pid from the owner."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class FolderLock:
    r"""Exclusive use of a folder by one process: ``<folder>/.lock`` holds the owner's pid,
    host and start time while the lock is held.

    A lock whose process no longer runs on this host (or whose pid was reused by another
    process) is stale: it is replaced, with a warning. A lock held by a live process, or by a
    process on another host, raises :class:`FolderLockedError` naming it.

    Example:
        >>> with FolderLock('runs/my-run'):
        ...     ...  # write the run's files
    """

    def __init__(self, folder: str | os.PathLike, what: str = 'run folder'):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.held = False
        self._fd = -1

    def _record(self) -> dict:
        return {'pid': os.getpid(), 'host': socket.gethostname(),
                'start': _process_start(os.getpid()), 'time': time.time()}

    @staticmethod
    def _parse(text: str) -> dict:
        """The owner record in a lock file's text; ``{}`` when it is not one."""
        try:
            owner = json.loads(text)
        except ValueError:
            return {}
        if not isinstance(owner, dict) or type(owner.get('pid')) is not int:
            return {}
        return owner

    def _owner(self) -> dict | None:
        """The lock's record; ``{}`` when it is empty or unreadable, ``None`` when gone."""
        try:
            return self._parse(self.path.read_text(errors='replace'))
        except FileNotFoundError:
            return None
        except OSError:
            return {}

    def _stale(self, owner: dict) -> bool:
        if not owner:  # empty or unreadable: a writer killed between create and write
            try:
                return time.time() - self.path.stat().st_mtime > 10
            except OSError:
                return True
        if owner.get('host') != socket.gethostname():
            return False
        pid = owner['pid']
        if not pid_alive(pid):
            return True
        start = owner.get('start')
        now = _process_start(pid)
        return start is not None and now is not None and start != now

    def _in_use(self, owner: dict | None, content: str = '') -> FolderLockedError:
        """The refusal naming the owner, or saying plainly that the record is unreadable."""
        where = f'{self.what} {str(self.folder)!r}'
        fix = (f'wait for it to finish or choose another folder; if no mmssl-pyg process uses '
               f'the folder, delete {str(self.path)!r}')
        if owner:
            try:
                since = time.strftime('%Y-%m-%d %H:%M:%S',
                                      time.localtime(float(owner.get('time'))))
            except (TypeError, ValueError, OverflowError, OSError):
                since = 'an unknown time'
            return FolderLockedError(
                f'{where} is in use by another mmssl-pyg process (pid {owner["pid"]} on '
                f'{owner.get("host") or "an unknown host"}, since {since}). Fix: {fix}')
        shown = repr(content[:40]) + ('...' if len(content) > 40 else '') if content \
            else 'nothing'
        return FolderLockedError(
            f'{where} is in use: its lock {str(self.path)!r} holds no owner record (it holds '
            f'{shown}) and is either held by a process that is still starting or was written '
            f'less than 10 s ago. Fix: {fix}')

    def acquire(self) -> FolderLock:
        """Take the lock, or raise :class:`FolderLockedError`.

        Atomic: ``.lock`` is opened (created when missing) and locked with ``flock``; only the
        process holding the ``flock`` reads the record, judges it stale or not, and writes its
        own into the same file. Two processes replacing one stale lock therefore cannot both
        win (the kernel gives the ``flock`` to one), and a holder that dies loses its ``flock``
        with it. A record naming a live process (an older version, or another host sharing
        the folder) is still respected.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(describe_os_error(err, self.folder, 'cannot create folder')) \
                from err
        nofollow = getattr(os, 'O_NOFOLLOW', 0)
        for _ in range(10):
            created = True
            try:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | nofollow, 0o644)
                except FileExistsError:
                    created = False
                    fd = os.open(self.path, os.O_RDWR | nofollow)
            except FileNotFoundError:
                continue  # released between the two opens
            except OSError as err:
                raise OutputError(describe_os_error(err, self.path, 'cannot lock')) from err
            try:
                # a process reading our fresh, still empty file holds its flock for a moment
                if not _try_flock(fd, wait=2.0 if created else 0.0):
                    raise self._in_use(self._owner(), self._text())
                try:  # the holder we waited on may have unlinked the file on release
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path,
                                                                  follow_symlinks=False))
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    fd = -1
                    continue
                if not created:
                    content = os.pread(fd, 4096, 0).decode('utf-8', 'replace')
                    owner = self._parse(content)
                    if not self._stale(owner):
                        raise self._in_use(owner, content)
                    who = (f'pid {owner["pid"]} (that process no longer runs)' if owner else
                           f'an unreadable record ({content[:40]!r})')
                    warnings.warn(f'{self.path}: removed a stale lock left by {who}',
                                  UserWarning, stacklevel=2)
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(self._record()).encode(), 0)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                raise
            self._fd = fd
            self.held = True
            return self
        raise FolderLockedError(f'cannot lock {str(self.folder)!r}: {str(self.path)!r} keeps '
                                f'being replaced. Fix: make sure no other process uses the folder')

    def _text(self) -> str:
        try:
            return self.path.read_text(errors='replace')
        except OSError:
            return ''

    def release(self) -> None:
        if not self.held:
            return
        fd, self._fd = self._fd, -1
        try:
            owner = self._parse(os.pread(fd, 4096, 0).decode('utf-8', 'replace'))
            if owner.get('pid') == os.getpid():
                _unlink_quietly(self.path)  # while still holding the flock
        except OSError:
            pass
        finally:
            os.close(fd)
            self.held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


GENERATED_PREFIX = 'mmssl-pyg-pyg-modules-'


def _generated_folder() -> Path:
    """This process's folder for PyG's rendered modules: ``<tmp>/mmssl-pyg-pyg-modules-<pid>``."""
    import tempfile
    return Path(tempfile.gettempdir()) / f'{GENERATED_PREFIX}{os.getpid()}'


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its folder alone
    return True


def remove_stale_generated_modules() -> list[Path]:
    """Delete the rendered-module folders (see :func:`generated_modules_here`) of processes
    that no longer run, e.g. one killed with ``kill -9`` before its exit handler ran."""
    import shutil
    folder = _generated_folder()
    removed = []
    for path in folder.parent.glob(f'{GENERATED_PREFIX}*'):
        pid = path.name[len(GENERATED_PREFIX):]
        if path == folder or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def remove_generated_modules() -> list[Path]:
    """Delete this process's folder of PyG's rendered modules (see
    :func:`generated_modules_here`); the modules are already imported, so their files are no
    longer needed once nothing will ``torch.jit.script`` a layer."""
    import shutil
    folder = _generated_folder()
    if not folder.exists():
        return []
    shutil.rmtree(folder, ignore_errors=True)
    return [] if folder.exists() else [folder]


_AT_EXIT: list[bool] = []


def remove_generated_modules_at_exit() -> None:
    """Run :func:`remove_generated_modules` when the process exits (registered once).

    Not at once: ``torch.jit.script`` of a layer reads its rendered module's source, so the
    files stay while the process may still need them."""
    if not _AT_EXIT:
        import atexit
        atexit.register(remove_generated_modules)
        _AT_EXIT.append(True)


@contextlib.contextmanager
def generated_modules_here() -> Iterator[Path]:
    """``with generated_modules_here(): MessagePassing.__init__(...)`` sends the module file PyG
    renders to this process's own folder.

    PyG renders a ``MessagePassing`` class's ``propagate`` (and ``edge_updater``) from a jinja
    template with ``NamedTemporaryFile(delete=False)`` in the system temporary folder and
    imports it (``torch_geometric.template``); the file is never removed. Here it goes to
    ``<tmp>/mmssl-pyg-pyg-modules-<pid>/``, removed at exit; folders left by processes that
    died without exiting (``kill -9``) are removed by the next process that renders one, so
    they do not accumulate over a study of hundreds of trials.
    """
    import tempfile
    folder = _generated_folder()
    if not folder.exists():  # once per process
        remove_stale_generated_modules()
        folder.mkdir()
    remove_generated_modules_at_exit()
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = before


@contextlib.contextmanager
def locked(folder: str | os.PathLike, what: str = 'run folder') -> Iterator[FolderLock]:
    """``with locked(folder):`` holds a :class:`FolderLock` and cleans stale ``.tmp`` files
    of the folder on entry (it is ours while we hold the lock)."""
    with FolderLock(folder, what) as lock:
        clean_stale_tmp(folder, all_tmp=True)
        yield lock
