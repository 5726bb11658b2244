"""The shell function that makes a Batch AI user's script run unchanged: ``eval "$(azbai az --alias)"``.

It defines ``az``: ``az batchai|storage|group …`` go to azbai (this interpreter, so the script needs no activated
venv), anything else to a real ``az`` on ``PATH`` when there is one (and a one-line message when there is none).
It also pins the local workspace (``$AZBAI_WORKSPACE``, default ``./.azbai`` of the directory it is evaluated in),
so that a script that changes directory keeps talking to the same groups, accounts and jobs.
"""

from __future__ import annotations

import shlex
import sys

ROUTED = ("batchai", "storage", "group")


def alias_script(python: str | None = None) -> str:
    """The bash/zsh function ``az`` (for ``eval`` or ``source``)."""
    interpreter = shlex.quote(python or sys.executable)
    routed = "|".join(ROUTED)
    return f"""# azbai: az batchai|storage|group run locally; other az commands go to the real az CLI
export AZBAI_WORKSPACE="${{AZBAI_WORKSPACE:-$PWD/.azbai}}"
az() {{
  case "${{1:-}}" in
    {routed}) {interpreter} -m azbai az "$@" ;;
    *)
      local real
      real="$(type -P az 2>/dev/null || whence -p az 2>/dev/null || true)"
      if [ -n "$real" ]; then
        "$real" "$@"
      else
        echo "azbai: 'az ${{1:-}}' is not run locally (only az {" / az ".join(ROUTED)}), and no az CLI is installed" >&2
        return 127
      fi
      ;;
  esac
}}
"""
