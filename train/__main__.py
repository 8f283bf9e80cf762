from cmarr.train.cli import train_app

train_app(prog_name="cmarr-train")
