from tapir.cli import main

main()
