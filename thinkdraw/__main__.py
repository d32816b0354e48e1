from thinkdraw.cli.main import main

main()
