from cmarr.extract.cli import app

app(prog_name="cmarr-extract")
