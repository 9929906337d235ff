"""Atomic file writes (a crash never leaves a half-written file under the final name) and JSON
reading with one-line errors."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp"):
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    `suffix` ends the temporary name, for writers that insist on an extension (".ckpt").
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp" + (suffix if suffix != ".tmp" else ""), dir=directory)
    os.close(fd)
    try:
        yield tmp
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def make_readable(path: str) -> None:
    """Give a finished file the usual 0666 & ~umask mode (mkstemp and MindRecord create it 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def read_json(path: str, what: str):
    """The JSON in `path`; a missing, unreadable or malformed file is a one-line UserInputError
    saying what was expected (`what`, e.g. "a LoRA adapter folder's adapter_config.json")."""
    import json

    from mindtransformer.errors import UserInputError

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such file; pass {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: not valid JSON ({err}); pass {what}") from None
