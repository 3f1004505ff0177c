from spawnwatch.cli import main

main()
