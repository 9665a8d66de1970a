"""The flags headless Chromium runs with in the report's browser tests and benchmark: no GPU, sandbox,
first-run or background network traffic (component updates, sync), a fixed window."""

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1300,1000",
)
