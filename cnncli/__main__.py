from cnncli.cli import console

console()
