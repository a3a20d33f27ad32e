"""A 'server' that starts and never answers: it reads nothing and sleeps."""

import time

time.sleep(3600)
