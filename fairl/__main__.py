from fairl.cli import entry

entry()
