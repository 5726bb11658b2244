"""Join the word files back."""

import os
import sys

words, out = sys.argv[1], sys.argv[2]
lines = []
for n in sorted(os.listdir(words)):
    with open(os.path.join(words, n)) as f:
        lines.append(f.read())
with open(os.path.join(out, "joined.txt"), "w") as f:
    f.writelines(lines)
print(f"joined {len(lines)} words", flush=True)
