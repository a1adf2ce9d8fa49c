from fmforge.cli import main

main()
