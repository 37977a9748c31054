# syntax=docker/dockerfile:1
# A local EVM devnet for docker-compose.yml: anvil from the npm package @foundry-rs/anvil.
FROM node:20-bookworm-slim
RUN npm install --global --no-audit --no-fund @foundry-rs/anvil@1.7.1 \
    && useradd --system --create-home --uid 10001 anvil
USER anvil
EXPOSE 8545
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD ["node", "-e", "fetch('http://127.0.0.1:8545',{method:'POST',headers:{'content-type':'application/json'},body:'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\"}'}).then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"]
ENTRYPOINT ["anvil", "--host", "0.0.0.0", "--port", "8545"]
