"""``python -m azbai``."""

from azbai.cli import main

if __name__ == "__main__":
    main()
