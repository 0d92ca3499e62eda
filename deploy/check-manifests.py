#!/usr/bin/env python3
"""Consistency checks of the deploy kit that need no cluster (run by scripts/test-deploy).

kubectl is not needed: every YAML file must parse, and the pieces that must agree do agree —
selectors and pod labels, ports and gate.toml listeners, probe paths, the drain budget
(preStop + gate.drain_seconds <= terminationGracePeriodSeconds, drain_seconds < systemd's
TimeoutStopSec), the secret files gate.toml names and the ones the pod / unit provides.
"""
import pathlib
import re
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent
K8S = ROOT / "kubernetes"
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


docs = {}
for p in sorted(list(K8S.glob("*.yaml")) + list((ROOT / "prometheus").glob("*.yml"))):
    try:
        docs[p.name] = load_all(p)
    except yaml.YAMLError as e:
        errors.append(f"{p}: invalid YAML: {e}")

kust = docs["kustomization.yaml"][0]
for r in kust["resources"]:
    check((K8S / r).is_file(), f"kustomization: resource {r} missing")
for gen in kust.get("configMapGenerator", []):
    for f in gen["files"]:
        check((K8S / f).is_file(), f"kustomization: configMapGenerator file {f} missing")

objs = [d for r in kust["resources"] for d in docs[r]]
by_kind = {}
for o in objs:
    by_kind.setdefault(o["kind"], []).append(o)

gate_cfg = tomllib.loads((K8S / "gate.toml").read_text(encoding="utf-8"))
dep = next(d for d in by_kind["Deployment"] if d["metadata"]["name"] == "transfer-gate")
spec = dep["spec"]
pod = spec["template"]["spec"]
pod_labels = spec["template"]["metadata"]["labels"]
check(spec["replicas"] >= 2, "Deployment: fewer than 2 replicas")
check(gate_cfg["ledger"]["backend"] == "redis", "k8s gate.toml: ledger.backend must be redis")
check("redis_url" in gate_cfg["ledger"] or "redis_cluster" in gate_cfg["ledger"],
      "k8s gate.toml: no redis_url / redis_cluster")
check(spec["selector"]["matchLabels"].items() <= pod_labels.items(),
      "Deployment: selector does not match the pod labels")

gate = next(c for c in pod["containers"] if c["name"] == "gate")
ports = {p["name"]: p["containerPort"] for p in gate["ports"]}
check(ports.get("proxy") == int(gate_cfg["gate"]["proxy_listen"].rsplit(":", 1)[1]),
      "Deployment: proxy port differs from gate.proxy_listen")
check(ports.get("admin") == int(gate_cfg["gate"]["admin_listen"].rsplit(":", 1)[1]),
      "Deployment: admin port differs from gate.admin_listen")
for listen in ("proxy_listen", "admin_listen"):
    check(gate_cfg["gate"][listen].startswith("0.0.0.0:"), f"k8s gate.toml: gate.{listen} not on all interfaces")
check(gate["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}, "readiness probe must be /readyz on admin")
check(gate["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}, "liveness probe must be /healthz on admin")
pre = gate["lifecycle"]["preStop"]
pre_sleep = int(pre["exec"]["command"][-1]) if "exec" in pre else int(pre["sleep"]["seconds"])
drain = int(gate_cfg["gate"]["drain_seconds"])
check(pod["terminationGracePeriodSeconds"] >= pre_sleep + drain + 5,
      f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} < preStop {pre_sleep} + drain {drain} + 5")

for c in pod["containers"] + pod.get("initContainers", []):
    sc = c["securityContext"]
    check(sc.get("readOnlyRootFilesystem") is True, f"{c['name']}: root file system not read-only")
    check(sc.get("allowPrivilegeEscalation") is False, f"{c['name']}: privilege escalation allowed")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{c['name']}: capabilities not dropped")
check(pod["securityContext"].get("runAsNonRoot") is True, "pod: runAsNonRoot not set")

vol_names = {v["name"] for v in pod["volumes"]}
for c in pod["containers"] + pod.get("initContainers", []):
    for m in c.get("volumeMounts", []):
        check(m["name"] in vol_names, f"{c['name']}: volume {m['name']} not declared")
mounts = {m["mountPath"]: m["name"] for m in gate["volumeMounts"]}
check(mounts.get("/etc/transfer-gate") == "config", "config not mounted at /etc/transfer-gate")
check(gate_cfg["gate"]["data_dir"] in mounts, "gate.data_dir is not a mounted volume")

# The secret files gate.toml names are the ones the init container copies from the Secret.
secret_dir = "/run/transfer-gate/secrets"
named = {gate_cfg["gate"]["admin_token_file"], gate_cfg["ledger"]["hash_key_file"],
         gate_cfg["tls"]["ca_cert"], gate_cfg["tls"]["ca_key"]}
# The Redis password comes from the Secret too, never from the ConfigMap.
check("redis_password_file" in gate_cfg["ledger"], "k8s gate.toml: no ledger.redis_password_file")
check("@" not in gate_cfg["ledger"].get("redis_url", ""), "k8s gate.toml: credentials in redis_url")
named.add(gate_cfg["ledger"].get("redis_password_file", ""))
check(all(p.startswith(secret_dir + "/") for p in named), "k8s gate.toml: secrets outside " + secret_dir)
init_script = " ".join(" ".join(c["command"]) for c in pod["initContainers"])
secret_vol = next(v for v in pod["volumes"] if v["name"] == "secrets-src")
items = {i["key"] for i in secret_vol["secret"]["items"]}
secret_example = docs["secret.example.yaml"][0]
check("data" not in secret_example, "secret.example.yaml: use stringData (data needs real base64)")
example = set(secret_example.get("stringData", {}))
for p in named:
    f = p.rsplit("/", 1)[1]
    check(f in init_script, f"init container does not copy {f}")
    check(f in items, f"secret volume does not project {f}")
    check(f in example, f"secret.example.yaml has no key {f}")

for kind in ("Service", "PodDisruptionBudget"):
    for o in by_kind.get(kind, []):
        sel = o["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        if o["metadata"]["name"] == "transfer-gate":
            check(sel.items() <= pod_labels.items(), f"{kind} {o['metadata']['name']}: selector does not match the gate pods")
svc = next(o for o in by_kind["Service"] if o["metadata"]["name"] == "transfer-gate")
check({p["port"] for p in svc["spec"]["ports"]} == {3128, 9464}, "Service: ports must be 3128 and 9464")
check("PodDisruptionBudget" in by_kind, "no PodDisruptionBudget")

# The kit's Redis requires the password the gate reads: requirepass from the same Secret key.
redis_sts = next(o for o in by_kind["StatefulSet"] if o["metadata"]["name"] == "transfer-gate-redis")
redis_pod = redis_sts["spec"]["template"]["spec"]
redis_c = redis_pod["containers"][0]
redis_script = " ".join(redis_c.get("command", []) + redis_c.get("args", []))
redis_secret = next((v["secret"] for v in redis_pod.get("volumes", []) if "secret" in v), None)
check(redis_secret is not None and redis_secret["secretName"] == secret_vol["secret"]["secretName"]
      and [i["key"] for i in redis_secret["items"]] == ["redis.password"],
      "redis.yaml: must mount only redis.password of the gate's Secret")
check(re.search(r"^\s*requirepass \$\(cat /run/redis/secret/redis\.password\)$", redis_script, re.M) is not None,
      "redis.yaml: requirepass must come from the Secret's redis.password")
for flag in ("appendonly yes", "appendfsync always", "maxmemory-policy noeviction"):
    check(flag in redis_script, f"redis.yaml: {flag} missing")

# NetworkPolicy: 3128 only from labelled client namespaces, 9464 only from the monitoring
# namespace, Redis only from the gate's pods.
pols = {o["metadata"]["name"]: o["spec"] for o in by_kind.get("NetworkPolicy", [])}
gate_pol = next((p for p in pols.values() if p["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()
                 and p["podSelector"].get("matchLabels")), None)
check(gate_pol is not None, "NetworkPolicy: none selects the gate pods")
if gate_pol is not None:
    check(gate_pol.get("policyTypes") == ["Ingress"], "NetworkPolicy (gate): policyTypes must be [Ingress]")
    admitted = {}
    for rule in gate_pol.get("ingress", []):
        ports = [p["port"] for p in rule.get("ports", [])]
        check(ports != [], "NetworkPolicy (gate): a rule without ports admits every port")
        for peer in rule.get("from", []):
            check(set(peer) == {"namespaceSelector"}, f"NetworkPolicy (gate): peer {peer} is not a namespace selector")
            sel = peer.get("namespaceSelector", {}).get("matchLabels", {})
            check(sel != {}, "NetworkPolicy (gate): an empty namespaceSelector admits every namespace")
            for port in ports:
                admitted.setdefault(port, []).append(sel)
    check(set(admitted) == {3128, 9464}, f"NetworkPolicy (gate): admits ports {sorted(admitted)}, expected 3128 and 9464")
    check(all("transfer-gate/client" in s for s in admitted.get(3128, [None])),
          "NetworkPolicy (gate): 3128 must be admitted from namespaces labelled transfer-gate/client only")
    check(admitted.get(9464) == [{"kubernetes.io/metadata.name": "monitoring"}],
          "NetworkPolicy (gate): 9464 must be admitted from the monitoring namespace only")
redis_pol = pols.get("transfer-gate-redis")
check(redis_pol is not None, "NetworkPolicy: none for Redis")
if redis_pol is not None:
    check(redis_pol["podSelector"]["matchLabels"] == redis_sts["spec"]["template"]["metadata"]["labels"],
          "NetworkPolicy (redis): does not select the Redis pods")
    peers = [peer for rule in redis_pol["ingress"] for peer in rule["from"]]
    check(peers and all(set(p) == {"podSelector"} and p["podSelector"]["matchLabels"].items() <= pod_labels.items()
                        and p["podSelector"]["matchLabels"] for p in peers),
          "NetworkPolicy (redis): must admit the gate's pods only")

# The ServiceMonitor is part of the kustomization and selects the gate's Service.
check("servicemonitor.yaml" in kust["resources"], "kustomization: servicemonitor.yaml missing")
for sm in by_kind.get("ServiceMonitor", []):
    check(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
          "ServiceMonitor: selector does not match the gate Service")
    check("release" in sm["metadata"]["labels"], "ServiceMonitor: no release label (kube-prometheus-stack selects on it)")

# The kit's approvals ship empty: an example approval would be used as if it were real.
approvals = tomllib.loads((K8S / "approvals.toml").read_text(encoding="utf-8"))
check(approvals.get("approval", []) == [], "kubernetes/approvals.toml: must ship without approvals")

# The Containerfile pulls no frontend image.
containerfile = (ROOT / "Containerfile").read_text(encoding="utf-8")
check(not re.search(r"^#\s*syntax\s*=", containerfile, re.M | re.I), "Containerfile: `# syntax=` pulls a frontend image")

# systemd: drain fits in TimeoutStopSec; the credentials gate.toml names are loaded.
unit = (ROOT / "systemd" / "transfer-gate.service").read_text(encoding="utf-8")
sd_cfg = tomllib.loads((ROOT / "systemd" / "gate.toml").read_text(encoding="utf-8"))
m = re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.M)
check(m is not None and int(m.group(1)) >= int(sd_cfg["gate"]["drain_seconds"]) + 5,
      "systemd: TimeoutStopSec must exceed gate.drain_seconds + 5")
creds = set(re.findall(r"^LoadCredential=([^:]+):", unit, re.M))
cred_dir = "/run/credentials/transfer-gate.service/"
for key in (sd_cfg["gate"].get("admin_token_file"), sd_cfg["tls"].get("ca_cert"), sd_cfg["tls"].get("ca_key")):
    if key and key.startswith(cred_dir):
        check(key[len(cred_dir):] in creds, f"systemd: {key} is not a LoadCredential")
for d, key in (("StateDirectory=transfer-gate", "data_dir"),):
    check(d in unit and sd_cfg["gate"][key] == "/var/lib/transfer-gate", "systemd: data_dir is not the StateDirectory")
check(re.search(r"^ExecReload=.*-HUP \$MAINPID$", unit, re.M) is not None, "systemd: ExecReload must send SIGHUP")
# Documentation= names files the install steps (deploy/README.md) create.
deploy_readme = (ROOT / "README.md").read_text(encoding="utf-8")
for doc in re.findall(r"^Documentation=(.+)$", unit, re.M):
    for url in doc.split():
        if url.startswith("file://"):
            path = pathlib.PurePosixPath(url[len("file://"):])
            installed = re.search(r"install -D -m 0644 -t " + re.escape(str(path.parent)) + r" (\S+)", deploy_readme)
            check(installed is not None and installed.group(1) == path.name and (ROOT.parent / path.name).is_file(),
                  f"systemd: Documentation={url} is not installed by deploy/README.md")
# logrotate: the file gate.toml writes, reopened through the unit's reload (SIGHUP).
logrotate = (ROOT / "systemd" / "transfer-gate.logrotate").read_text(encoding="utf-8")
check(re.search(r"^" + re.escape(sd_cfg["gate"]["audit_log"]) + r" \{$", logrotate, re.M) is not None,
      "logrotate: does not rotate gate.audit_log")
check(re.search(r"^\s*systemctl reload transfer-gate\.service", logrotate, re.M) is not None,
      "logrotate: postrotate must reload the unit (SIGHUP reopens the audit log)")
check(re.search(r"^\s*(copytruncate|create)\b", logrotate, re.M) is None,
      "logrotate: the gate reopens the file itself (no copytruncate, no create)")
check("transfer-gate.logrotate /etc/logrotate.d/transfer-gate" in deploy_readme,
      "deploy/README.md: the systemd install does not install the logrotate file")

# Every alert has a `runbook` annotation pointing at its own heading in docs/operations.md.
readme = (ROOT.parent / "docs" / "operations.md").read_text(encoding="utf-8")
anchors = {re.sub(r"[^a-z0-9_ -]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.+)$", readme, re.M)}
for group in docs["alerts.yml"][0]["groups"]:
    for rule in group["rules"]:
        name = rule["alert"]
        runbook = rule.get("annotations", {}).get("runbook", "")
        check(runbook == f"docs/operations.md#{name.lower()}", f"alert {name}: runbook must be docs/operations.md#{name.lower()}")
        check(name.lower() in anchors, f"alert {name}: docs/operations.md has no heading `### {name}`")
        check(rule["labels"].get("severity") in ("warning", "critical"), f"alert {name}: severity")

if errors:
    for e in errors:
        print(f"check-manifests: {e}", file=sys.stderr)
    sys.exit(1)
print(f"check-manifests: ok ({sum(len(v) for v in docs.values())} YAML documents)")
