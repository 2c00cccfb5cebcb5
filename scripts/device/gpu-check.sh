#!/usr/bin/env bash
# GPU-aware capacity on a real NVIDIA host: runs the release binary with no pins, so capacity is
# decided by nvidia-smi. Expects at least one GPU. Writes evidence under $OUT (or ./gpu-check).
#   bash scripts/device/gpu-check.sh [path/to/spillway]
set -u
BIN=${1:-target/release/spillway}
OUT=${OUT:-./gpu-check}
mkdir -p "$OUT"
D=$(mktemp -d)
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
NGPU=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
"$BIN" serve --listen 127.0.0.1:7474 --data-dir "$D/data" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 50); do curl -sf localhost:7474/_spillway/health >/dev/null && break; sleep 0.1; done
sm() { curl -s -X POST localhost:7474/ -H "X-Amz-Target: SageMaker.$1" -H 'Content-Type: application/x-amz-json-1.1' -d "$2"; echo; }
sm CreateModel '{"ModelName":"m","PrimaryContainer":{"Image":"builtin:echo"}}'
# Priority 1 needs 8 GPUs, priority 2 one GPU, priority 3 none: with N GPUs free, N instances land
# on ml.g6e.xlarge with distinct CUDA_VISIBLE_DEVICES and the rest fall back to ml.m5.xlarge.
COUNT=$((NGPU + 1))
sm CreateEndpointConfig "{\"EndpointConfigName\":\"c\",\"ProductionVariants\":[{\"VariantName\":\"v\",\"ModelName\":\"m\",\"InitialInstanceCount\":$COUNT,\"RoutingConfig\":{\"RoutingStrategy\":\"RANDOM\"},\"InstancePools\":[{\"InstanceType\":\"ml.p5.48xlarge\",\"Priority\":1},{\"InstanceType\":\"ml.g6e.xlarge\",\"Priority\":2},{\"InstanceType\":\"ml.m5.xlarge\",\"Priority\":3}]}]}"
sm CreateEndpoint '{"EndpointName":"e","EndpointConfigName":"c"}'
for _ in $(seq 60); do sm DescribeEndpoint '{"EndpointName":"e"}' | grep -q '"InService"' && break; sleep 0.5; done
sm DescribeEndpoint '{"EndpointName":"e"}' | tee "$OUT/describe.json"
curl -s localhost:7474/_spillway/endpoints/e/events | tee "$OUT/events.json"; echo
curl -s localhost:7474/_spillway/endpoints/e/instances | tee "$OUT/instances.json"; echo
for i in $(seq 20); do
  curl -s -D - localhost:7474/endpoints/e/invocations -d hi -o "$OUT/body.json" | grep -i x-spillway-instance-type
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["instanceType"], "CUDA_VISIBLE_DEVICES=" + repr(d["env"].get("CUDA_VISIBLE_DEVICES")))' "$OUT/body.json"
done | sort | uniq -c | tee "$OUT/invocations.txt"
curl -s localhost:7474/_spillway/capacity | tee "$OUT/capacity.json"; echo
