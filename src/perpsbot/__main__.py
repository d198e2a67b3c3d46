from perpsbot.cli.main import main

main()
