"""`python -m mindtransformer.models.bert.bert_trainer`: the original MindSpore suite's entry
point for BERT pretraining; the job itself is mindtransformer/trainer/pretrain.py."""

if __name__ == "__main__":
    from mindtransformer.trainer.pretrain import main
    from mindtransformer.utils.cli import run_main

    raise SystemExit(run_main(main))
