from voxmatch.cli import main

main()
