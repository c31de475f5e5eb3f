from xairobust.cli import run

run()
