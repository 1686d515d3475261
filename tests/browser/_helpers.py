"""Helpers shared by the browser tests."""
import time

# the attribution image's bytes, as a short fingerprint (its src is a blob: URL, new for every value)
FINGERPRINT = """async img => {
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let h = 0;
    for (const b of bytes) h = (h * 31 + b) >>> 0;
    return img.src + " " + bytes.length + " " + h;
}"""


def new_image(img, before: str, timeout: float = 30) -> str:
    """Wait until ``img`` shows other bytes than the fingerprint ``before``; return the new fingerprint (the
    ``src`` alone is no evidence: the widget makes a new blob URL whenever it re-renders, even for the same
    bytes). Returns the last fingerprint if nothing changed in time."""
    deadline = time.monotonic() + timeout
    while True:
        now = img.evaluate(FINGERPRINT)
        if now.split(" ")[1:] != before.split(" ")[1:] or time.monotonic() > deadline:
            return now
        time.sleep(0.2)
