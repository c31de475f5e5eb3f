# Focus (Arias-Duart et al.) with full-size mosaics on the two bit-reproduced CIFAR-10 CPU runs of results/cifar10_cpu
# (Standard b13a046f..., Adv. Training aa03badb...; trained by configs/cifar10/cpu_{standard,pgd}.yaml, see that
# folder's COMMAND.sh), main fc85467, AMD EPYC, 2 shared cores at load ~3 (a full test suite beside it).
# fc/ holds copies of the two run directories (their IG and sobel attributions of 100 test images, from the batch).
export XAIROBUST_DATA=DATA
xairobust score --model fc/standard --model fc/pgd --explainer ig    --metrics focus --set focus.mosaic=full --n 32 --out out_ig    --baseline Standard --no-figures -q   # 25.7 s wall, 22.9 s user
xairobust score --model fc/standard --model fc/pgd --explainer sobel --metrics focus --set focus.mosaic=full --n 32 --out out_sobel --baseline Standard --no-figures -q   #  7.3 s wall,  5.9 s user
xairobust report fc/standard fc/pgd --out out --baseline Standard --explainer ig,sobel --no-figures -q
# then: this folder = out/*; weights_sha256.csv from each run's model.safetensors (checked equal to run.json's).
