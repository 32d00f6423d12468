#!/usr/bin/python3

import time, sys, random

time.sleep(random.uniform(2, 4))
print(time.asctime())
exit(0)
