"""A warm-start test job that ends as its first argument says."""

import atexit
import sys
import threading
import time

how = sys.argv[1]
atexit.register(lambda: print("atexit ran", flush=True))
if how == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread joined", flush=True))).start()
elif how == "exit":
    sys.exit(int(sys.argv[2]))
elif how == "message":
    sys.exit("a message for stderr")
elif how == "raise":
    {}["missing"]
elif how == "interrupt":
    raise KeyboardInterrupt
print("end of script", flush=True)
