"""Split a text file into one file per word; counts how often it ran."""

import os
import sys

source, out = sys.argv[1], sys.argv[2]
with open(source) as f:
    words = f.read().split()
for i, word in enumerate(words):
    with open(os.path.join(out, f"{i:03d}.txt"), "w") as f:
        f.write(f"{os.environ.get('GREETING', '?')} {word}\n")
print(f"produced {len(words)} words", flush=True)
