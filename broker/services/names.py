"""Display names as people write them (any script), and the safe slugs Slurm gets.

Enterprises, projects and jobs are named in the user's language ("Société Générale",
"量子化学", "dft-Ø3"). Slurm accounts, POSIX users and ``--job-name`` get an ASCII slug
derived from the name by python-slugify (transliterated by text-unidecode), so no
scheduler, shell or log ever sees more than ``[a-z0-9_]``.
"""

from __future__ import annotations

import re
import unicodedata

from slugify import slugify

from ..errors import InvalidInput
from ..schemas.common import display_name_error


def display_name(value: str, field: str = "name", max_length: int = 100) -> str:
    """``value`` stripped and NFC-normalised, or InvalidInput naming ``field``."""
    text = unicodedata.normalize("NFC", value.strip())
    why = display_name_error(text)
    if why is None and len(text) > max_length:
        why = f"must be at most {max_length} characters"
    if why is not None:
        raise InvalidInput(field, why)
    return text


def slug(name: str, max_length: int, fallback: str) -> str:
    """``[a-z0-9_]`` only, at most ``max_length``; ``fallback`` if nothing is left."""
    out = slugify(name, separator="_", max_length=max_length, word_boundary=False)
    return out.strip("_") or fallback


#: A job name Slurm gets as written: the ASCII names the API took before any script was.
_SLURM_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def slurm_job_name(name: str) -> str:
    """``--job-name`` for a job: its name if plain ASCII, else its slug ("расчёт" ->
    "raschet")."""
    if _SLURM_SAFE.match(name):
        return name
    return slug(name, 64, "job")
