/**
 * The Helm chart (helm/gemma-serve), rendered by a real helm binary (see helm-binary.ts) for
 * the default values, values-gpu.yaml and the optional features, then checked: every document
 * is a Kubernetes object of a known kind and apiVersion that validates against the Kubernetes
 * (and KEDA / prometheus-operator) OpenAPI schemas shipped by kubernetes-models, and the pieces
 * fit together — probes on /health and /ready on the named port, a startup budget for a large
 * model, a termination grace period that covers preStop plus the drain, GPU requests and
 * tolerations, optional objects absent by default and present when enabled.
 */
import t, { type Test } from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMap, isPair, isScalar, isSeq, parseAllDocuments, parseDocument, type Node as YamlNode } from 'yaml';
import { ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { helmPath, helmUnavailable } from './helm-binary.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CHART = join(ROOT, 'helm/gemma-serve');
const GPU_VALUES = join(CHART, 'values-gpu.yaml');

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** kind -> [apiVersion, schema-validating model] for every kind the chart may render. */
const KINDS: Record<string, [string, new (data: any) => { validate(): void }]> = { // eslint-disable-line @typescript-eslint/no-explicit-any
  ServiceAccount: ['v1', ServiceAccount],
  ConfigMap: ['v1', ConfigMap],
  Secret: ['v1', Secret],
  PersistentVolumeClaim: ['v1', PersistentVolumeClaim],
  Service: ['v1', Service],
  Deployment: ['apps/v1', Deployment],
  HorizontalPodAutoscaler: ['autoscaling/v2', HorizontalPodAutoscaler],
  PodDisruptionBudget: ['policy/v1', PodDisruptionBudget],
  ScaledObject: ['keda.sh/v1alpha1', ScaledObject],
  ServiceMonitor: ['monitoring.coreos.com/v1', ServiceMonitor],
};

const unavailable = helmUnavailable();
if (unavailable !== null) {
  t.plan(0, `no helm binary here: ${unavailable}`);
} else {
  run();
}

function run(): void {
  const helm = helmPath();
  const home = mkdtempSync(join(tmpdir(), 'gemma-serve-helm-'));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const env = { ...process.env, HOME: home, HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') };

  /** `helm template` with these -f files and --set values: the parsed documents. */
  function render(files: string[] = [], sets: string[] = []): Obj[] {
    const args = ['template', 'rel', CHART, '--namespace', 'llm', ...files.flatMap((f) => ['-f', f]), ...sets.flatMap((s) => ['--set', s])];
    const out = execFileSync(helm, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const docs = parseAllDocuments(out);
    const objs: Obj[] = [];
    for (const d of docs) {
      if (d.errors.length > 0) throw new Error(`rendered YAML does not parse: ${d.errors[0]!.message}`);
      const o = d.toJS() as Obj | null;
      if (o !== null) objs.push(o);
    }
    return objs;
  }
  function renderFails(sets: string[]): string {
    const r = spawnSync(helm, ['template', 'rel', CHART, ...sets.flatMap((s) => ['--set', s])], { env, encoding: 'utf8' });
    return r.status === 0 ? '' : r.stderr;
  }
  const one = (objs: Obj[], kind: string): Obj => {
    const found = objs.filter((o) => o.kind === kind);
    if (found.length !== 1) throw new Error(`expected one ${kind}, got ${found.length}`);
    return found[0]!;
  };
  const kinds = (objs: Obj[]): string[] => objs.map((o) => o.kind as string).sort();

  /** Structural and schema checks every render must pass. */
  function checkManifests(t: Test, objs: Obj[]): void {
    t.ok(objs.length > 0, 'the chart renders objects');
    const names = new Set<string>();
    for (const o of objs) {
      const what = `${o.kind}/${o.metadata?.name}`;
      t.type(o.apiVersion, 'string', `${what}: apiVersion`);
      t.type(o.kind, 'string', `${what}: kind`);
      t.type(o.metadata?.name, 'string', `${what}: metadata.name`);
      t.match(o.metadata.name, /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, `${what}: the name is a DNS-1123 label`);
      t.notOk(names.has(`${o.kind}/${o.metadata.name}`), `${what}: unique`);
      names.add(`${o.kind}/${o.metadata.name}`);
      t.notOk('namespace' in o.metadata && o.metadata.namespace !== 'llm', `${what}: in the release namespace`);
      const known = KINDS[o.kind as string];
      t.ok(known, `${what}: a kind the chart is expected to render`);
      if (known === undefined) continue;
      t.equal(o.apiVersion, known[0], `${what}: apiVersion ${known[0]}`);
      t.doesNotThrow(() => new known[1](o).validate(), `${what}: valid against its schema`);
      t.equal(o.metadata.labels?.['app.kubernetes.io/instance'], 'rel', `${what}: release label`);
    }
    const dep = one(objs, 'Deployment');
    const pod = dep.spec.template;
    const podLabels = pod.metadata.labels as Record<string, string>;
    for (const [k, v] of Object.entries(dep.spec.selector.matchLabels as Record<string, string>)) t.equal(podLabels[k], v, `Deployment selector ${k} matches the pod labels`);
    t.equal(pod.spec.containers.length, 1, 'one container');
    const c = pod.spec.containers[0] as Obj;
    const http = (c.ports as Obj[]).find((p) => p.name === 'http');
    t.ok(http, 'a port named http');
    const cm = one(objs, 'ConfigMap');
    t.equal(String(http!.containerPort), cm.data.GEMMA_SERVE_PORT, 'the container port is the one the server listens on');
    t.equal(cm.data.GEMMA_SERVE_HOST, '0.0.0.0', 'the server listens beyond loopback');
    t.same(c.envFrom, [{ configMapRef: { name: cm.metadata.name } }], 'flags come from the ConfigMap');
    // Probes: HTTP on the named port; startup and readiness on /ready, liveness on /health.
    for (const [probe, path] of [['startupProbe', '/ready'], ['readinessProbe', '/ready'], ['livenessProbe', '/health']] as const) {
      t.equal(c[probe]?.httpGet?.path, path, `${probe} on ${path}`);
      t.equal(c[probe]?.httpGet?.port, 'http', `${probe} on the http port`);
    }
    const sp = c.startupProbe as Obj;
    t.ok(sp.failureThreshold * sp.periodSeconds >= 30 * 60, `startup budget ${sp.failureThreshold * sp.periodSeconds} s >= 30 min (a large model loads slowly)`);
    t.ok(c.livenessProbe.timeoutSeconds >= 1 && c.livenessProbe.failureThreshold >= 3, 'liveness tolerates a briefly busy server');
    // Drain: preStop sleep, then SIGTERM with --shutdown-timeout; the grace period covers both.
    const preStop = c.lifecycle?.preStop?.exec?.command as string[] | undefined;
    t.ok(preStop && preStop[0] === 'sleep', 'a preStop sleep');
    const preStopSeconds = Number(preStop?.[1] ?? 0);
    t.ok(preStopSeconds > 0);
    t.ok((c.args as string[]).includes('--shutdown-timeout=$(GEMMA_SERVE_SHUTDOWN_TIMEOUT)'), 'the drain timeout is passed as --shutdown-timeout');
    const shutdownTimeout = Number(cm.data.GEMMA_SERVE_SHUTDOWN_TIMEOUT);
    t.ok(shutdownTimeout > 0, `shutdown timeout ${shutdownTimeout} s`);
    t.ok(pod.spec.terminationGracePeriodSeconds >= shutdownTimeout + preStopSeconds,
      `terminationGracePeriodSeconds ${pod.spec.terminationGracePeriodSeconds} >= shutdown ${shutdownTimeout} + preStop ${preStopSeconds}`);
    t.equal(c.args[0], 'serve');
    // every $(VAR) in args is defined (else Kubernetes passes it through literally)
    const defined = new Set([...Object.keys(cm.data), ...((c.env ?? []) as Obj[]).map((e) => e.name as string)]);
    for (const a of c.args as string[]) for (const m of a.matchAll(/\$\((\w+)\)/g)) t.ok(defined.has(m[1]!), `$(${m[1]}) is defined`);
    // each GEMMA_SERVE_* variable is one the server reads, or is handed to it as $(VAR) in args
    const serverSource = readFileSync(join(ROOT, 'src/cli/serve.ts'), 'utf8') + readFileSync(join(ROOT, 'src/engine/resolve-model.ts'), 'utf8');
    for (const k of Object.keys(cm.data)) {
      t.ok(serverSource.includes(`'${k}'`) || (c.args as string[]).some((a) => a.includes(`$(${k})`)), `${k} reaches the server`);
    }
    // non-root, matching the image's user
    const uid = dockerfileUid();
    t.equal(pod.spec.securityContext.runAsNonRoot, true, 'runAsNonRoot');
    t.equal(pod.spec.securityContext.runAsUser, uid, `runs as the image's uid ${uid}`);
    t.equal(c.securityContext.allowPrivilegeEscalation, false, 'no privilege escalation');
    t.same(c.securityContext.capabilities.drop, ['ALL'], 'drops all capabilities');
    if (c.securityContext.readOnlyRootFilesystem) {
      t.ok((c.volumeMounts as Obj[]).some((m) => m.mountPath === '/tmp'), 'a writable /tmp (the OS temp dir) with a read-only root');
    }
    // volumes: every mount has a volume; the data dir is mounted where the server writes
    const volumes = new Map((pod.spec.volumes as Obj[]).map((v) => [v.name as string, v]));
    for (const m of c.volumeMounts as Obj[]) t.ok(volumes.has(m.name), `mount ${m.name} has a volume`);
    t.ok((c.volumeMounts as Obj[]).some((m) => m.mountPath === cm.data.GEMMA_SERVE_DATA_DIR), 'the data dir is a volume');
    if (cm.data.GEMMA_SERVE_MODEL !== undefined) {
      const mount = (c.volumeMounts as Obj[]).find((m) => m.name === 'model');
      t.ok(mount && (cm.data.GEMMA_SERVE_MODEL === mount.mountPath || cm.data.GEMMA_SERVE_MODEL.startsWith(`${mount.mountPath}/`)), 'GEMMA_SERVE_MODEL is inside the model volume');
      const claim = volumes.get('model')?.persistentVolumeClaim?.claimName as string | undefined;
      const pvc = objs.find((o) => o.kind === 'PersistentVolumeClaim');
      if (pvc) t.equal(claim, pvc.metadata.name, 'the model volume is the chart\'s claim');
    }
    // Service -> pods
    const svc = one(objs, 'Service');
    for (const [k, v] of Object.entries(svc.spec.selector as Record<string, string>)) t.equal(podLabels[k], v, `Service selector ${k} matches the pods`);
    t.equal(svc.spec.ports[0].targetPort, 'http', 'the Service targets the http port');
    const pdb = objs.find((o) => o.kind === 'PodDisruptionBudget');
    if (pdb) for (const [k, v] of Object.entries(pdb.spec.selector.matchLabels as Record<string, string>)) t.equal(podLabels[k], v, `PDB selector ${k} matches the pods`);
    t.equal(pod.spec.serviceAccountName, one(objs, 'ServiceAccount').metadata.name, 'the pods use the chart\'s service account');
  }

  t.test('helm lint passes for the default and the GPU values', async (t) => {
    for (const files of [[], [GPU_VALUES]]) {
      const r = spawnSync(helm, ['lint', '--strict', CHART, ...files.flatMap((f) => ['-f', f])], { env, encoding: 'utf8' });
      t.equal(r.status, 0, `helm lint --strict ${files.join(' ')}: ${r.stdout}${r.stderr}`);
    }
  });

  t.test('default values: valid manifests; optional objects absent', async (t) => {
    const objs = render();
    checkManifests(t, objs);
    t.same(kinds(objs), ['ConfigMap', 'Deployment', 'PersistentVolumeClaim', 'PodDisruptionBudget', 'Service', 'ServiceAccount']);
    const dep = one(objs, 'Deployment');
    const c = dep.spec.template.spec.containers[0] as Obj;
    t.equal(dep.spec.replicas, 1, 'replicas from replicaCount');
    t.equal(c.image, 'gemma-serve:0.1.0', 'the CPU image, tagged with appVersion');
    t.equal(one(objs, 'ConfigMap').data.GEMMA_SERVE_DEVICE, 'cpu');
    t.notOk(c.resources.limits?.['nvidia.com/gpu'], 'no GPU requested');
    t.notOk(dep.spec.template.spec.tolerations, 'no tolerations');
    t.notOk(c.env, 'no API key file without keys');
    t.notOk((c.args as string[]).includes('--metrics-names=vllm'), 'gemma_serve: metric names by default');
    t.equal(one(objs, 'Service').spec.sessionAffinity, 'None');
    t.equal(one(objs, 'PersistentVolumeClaim').metadata.annotations['helm.sh/resource-policy'], 'keep', 'the model claim survives helm uninstall');
  });

  t.test('values-gpu.yaml: CUDA image, one nvidia.com/gpu, GPU tolerations', async (t) => {
    const objs = render([GPU_VALUES]);
    checkManifests(t, objs);
    const dep = one(objs, 'Deployment');
    const c = dep.spec.template.spec.containers[0] as Obj;
    t.equal(c.resources.limits['nvidia.com/gpu'], 1, 'limits nvidia.com/gpu: 1');
    t.ok(c.resources.limits.memory, 'the host memory limit is kept alongside the GPU');
    t.ok((dep.spec.template.spec.tolerations as Obj[]).some((x) => x.key === 'nvidia.com/gpu' && x.effect === 'NoSchedule'), 'tolerates the nvidia.com/gpu taint');
    t.match(c.image, /:0\.1\.0-cuda$/, 'the -cuda image');
    t.equal(one(objs, 'ConfigMap').data.GEMMA_SERVE_DEVICE, 'cuda', '--device cuda');
    t.equal(dep.spec.strategy.rollingUpdate.maxSurge, 0, 'no surge pod needing a spare GPU');
  });

  t.test('ServiceMonitor and KEDA ScaledObject when enabled', async (t) => {
    const objs = render([], ['serviceMonitor.enabled=true', 'serviceMonitor.labels.release=prom', 'keda.enabled=true']);
    checkManifests(t, objs);
    const dep = one(objs, 'Deployment');
    const sm = one(objs, 'ServiceMonitor');
    t.same(sm.spec.endpoints.map((e: Obj) => [e.port, e.path]), [['http', '/metrics']], 'scrapes /metrics on the http port');
    t.equal(sm.metadata.labels.release, 'prom', 'extra labels for the Prometheus selector');
    t.same(sm.spec.namespaceSelector.matchNames, ['llm']);
    for (const [k, v] of Object.entries(sm.spec.selector.matchLabels as Record<string, string>)) t.equal(one(objs, 'Service').metadata.labels[k], v, `ServiceMonitor selects the Service by ${k}`);
    const so = one(objs, 'ScaledObject');
    t.equal(so.spec.scaleTargetRef.name, dep.metadata.name, 'scales the Deployment');
    const trigger = so.spec.triggers[0] as Obj;
    t.equal(trigger.type, 'prometheus');
    t.match(trigger.metadata.query, /^sum\(gemma_serve:num_requests_waiting\{namespace="llm",pod=~"rel-gemma-serve-\.\*"\}\)$/, 'on gemma_serve:num_requests_waiting of this release');
    t.equal(trigger.metadata.threshold, '4');
    t.notOk('replicas' in dep.spec, 'KEDA owns the replica count');
    t.notOk(objs.some((o) => o.kind === 'HorizontalPodAutoscaler'), 'no chart HPA beside KEDA\'s');

    const vllm = render([], ['keda.enabled=true', 'metrics.names=vllm', 'keda.threshold=10', 'keda.prometheusServerAddress=http://prom:9090']);
    checkManifests(t, vllm);
    const vt = one(vllm, 'ScaledObject').spec.triggers[0] as Obj;
    t.match(vt.metadata.query, /^sum\(vllm:num_requests_waiting\{/, 'vllm:num_requests_waiting with --metrics-names vllm');
    t.equal(vt.metadata.threshold, '10');
    t.equal(vt.metadata.serverAddress, 'http://prom:9090');
    t.ok(one(vllm, 'Deployment').spec.template.spec.containers[0].args.includes('--metrics-names=vllm'), 'the server emits vllm: names');
    const custom = render([], ['keda.enabled=true', 'keda.query=sum(rate(x[1m]))']);
    t.equal(one(custom, 'ScaledObject').spec.triggers[0].metadata.query, 'sum(rate(x[1m]))', 'a custom query');
  });

  t.test('HPA on CPU when enabled; never together with KEDA', async (t) => {
    const objs = render([], ['autoscaling.enabled=true', 'autoscaling.maxReplicas=6']);
    checkManifests(t, objs);
    const hpa = one(objs, 'HorizontalPodAutoscaler');
    t.same(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: one(objs, 'Deployment').metadata.name });
    t.equal(hpa.spec.maxReplicas, 6);
    t.equal(hpa.spec.metrics[0].resource.name, 'cpu');
    t.notOk('replicas' in one(objs, 'Deployment').spec, 'the HPA owns the replica count');
    t.match(renderFails(['autoscaling.enabled=true', 'keda.enabled=true']), /either autoscaling .* or keda/);
  });

  t.test('API keys from a created or an existing Secret', async (t) => {
    const objs = render([], ['auth.apiKeys={k1,k2}']);
    checkManifests(t, objs);
    const secret = one(objs, 'Secret');
    t.equal(Buffer.from(secret.data['api-keys'], 'base64').toString('utf8'), 'k1\nk2', 'one key per line');
    const pod = one(objs, 'Deployment').spec.template.spec;
    const c = pod.containers[0] as Obj;
    const vol = (pod.volumes as Obj[]).find((v) => v.secret?.secretName === secret.metadata.name);
    t.ok(vol, 'the Secret is a volume');
    const mount = (c.volumeMounts as Obj[]).find((m) => m.name === vol?.name);
    t.same(c.env, [{ name: 'GEMMA_SERVE_API_KEY_FILE', value: `${mount?.mountPath}/api-keys` }], 'the server reads the mounted key file');
    t.notOk(JSON.stringify(one(objs, 'ConfigMap')).includes('k1'), 'keys never in the ConfigMap');
    const existing = render([], ['auth.existingSecret=my-keys', 'auth.secretKey=keys.txt', 'auth.apiKeys={ignored}']);
    checkManifests(t, existing);
    t.notOk(existing.some((o) => o.kind === 'Secret'), 'no Secret created for an existing one');
    const ep = one(existing, 'Deployment').spec.template.spec;
    t.ok((ep.volumes as Obj[]).some((v) => v.secret?.secretName === 'my-keys'), 'the existing Secret is mounted');
    t.match(ep.containers[0].env[0].value, /\/keys\.txt$/);
  });

  t.test('model from hostPath, an existing claim, or none; session affinity; grace period', async (t) => {
    const host = render([], ['model.source=hostPath', 'model.hostPath=/mnt/models', 'model.dir=gemma-2-9b-it']);
    checkManifests(t, host);
    t.notOk(host.some((o) => o.kind === 'PersistentVolumeClaim'), 'no claim for hostPath');
    const hv = (one(host, 'Deployment').spec.template.spec.volumes as Obj[]).find((v) => v.name === 'model');
    t.same(hv?.hostPath, { path: '/mnt/models', type: 'Directory' });
    t.equal(one(host, 'ConfigMap').data.GEMMA_SERVE_MODEL, '/models/gemma-2-9b-it');
    const claim = render([], ['model.persistence.existingClaim=shared-models']);
    checkManifests(t, claim);
    t.notOk(claim.some((o) => o.kind === 'PersistentVolumeClaim'));
    t.equal((one(claim, 'Deployment').spec.template.spec.volumes as Obj[]).find((v) => v.name === 'model')?.persistentVolumeClaim.claimName, 'shared-models');
    const none = render([], ['model.source=none']);
    checkManifests(t, none);
    t.notOk('GEMMA_SERVE_MODEL' in one(none, 'ConfigMap').data, 'no model: the server makes its random demo model');
    t.match(renderFails(['model.source=hostPath']), /model\.hostPath is empty/);

    const sticky = render([], ['service.sessionAffinity=ClientIP']);
    checkManifests(t, sticky);
    t.equal(one(sticky, 'Service').spec.sessionAffinity, 'ClientIP');
    t.equal(one(sticky, 'Service').spec.sessionAffinityConfig.clientIP.timeoutSeconds, 10800);

    const long = render([], ['server.shutdownTimeoutSeconds=600', 'shutdown.preStopSleepSeconds=15']);
    checkManifests(t, long);
    t.equal(one(long, 'Deployment').spec.template.spec.terminationGracePeriodSeconds, 625, 'derived: preStop + drain + margin');
    t.match(renderFails(['shutdown.terminationGracePeriodSeconds=20']), /must be at least/, 'a grace period shorter than the drain is refused');
    t.match(renderFails(['server.device=cuda']), /gpu\.count is 0/, 'cuda without a GPU is refused');
    t.match(renderFails(['metrics.names=prom']), /metrics\.names must be/);
  });

  t.test('NOTES.txt renders (client-side dry-run install)', async (t) => {
    const r = spawnSync(helm, ['install', 'rel', CHART, '--dry-run=client', '--namespace', 'llm', '--set', 'model.source=none'], { env: { ...env, KUBECONFIG: join(home, 'none') }, encoding: 'utf8' });
    t.equal(r.status, 0, r.stderr);
    const notes = r.stdout.slice(r.stdout.indexOf('NOTES:'));
    t.match(notes, /port-forward service\/rel-gemma-serve 8000:8000/, 'how to reach the Service');
    t.match(notes, /RANDOM weights/, 'warns about the demo model');
    t.match(notes, /no API keys/, 'warns about an open API');
    t.notMatch(notes, /<no value>/, 'no missing values');
  });

  t.test('every value in values.yaml and values-gpu.yaml is documented', async (t) => {
    for (const file of [join(CHART, 'values.yaml'), GPU_VALUES]) {
      const undocumented = undocumentedKeys(readFileSync(file, 'utf8'));
      t.same(undocumented, [], `${file}: every key has a comment`);
    }
    t.same(undocumentedKeys('a: 1 # ok\n# b\nb:\n  c: 2\n'), ['b.c'], 'the check finds an undocumented key');
  });
}

/** The numeric uid of the Dockerfile's last USER. */
function dockerfileUid(): number {
  const users = [...readFileSync(join(ROOT, 'Dockerfile'), 'utf8').matchAll(/^USER\s+(\d+)/gm)];
  return Number(users[users.length - 1]?.[1]);
}

/**
 * Dotted paths of map keys with no comment: none on the line before (or above the block it
 * opens, for a map's first key) and none after the value on the same line. Sequence items
 * inherit their key's comment.
 */
export function undocumentedKeys(text: string): string[] {
  const doc = parseDocument(text);
  const missing: string[] = [];
  const walk = (node: YamlNode | null | undefined, path: string, parentDocumented: boolean): void => {
    if (isMap(node)) {
      node.items.forEach((pair, i) => {
        if (!isPair(pair)) return;
        const key = isScalar(pair.key) ? String(pair.key.value) : '?';
        const p = path === '' ? key : `${path}.${key}`;
        const keyNode = pair.key as YamlNode | null;
        const value = pair.value as YamlNode | null;
        const documented = Boolean(
          keyNode?.commentBefore
          || (i === 0 && (node.commentBefore || (path === '' && doc.commentBefore)))
          || (isScalar(value) && value.comment)
          || (value && (isMap(value) || isSeq(value)) && value.commentBefore && !value.flow)
          || (keyNode && (keyNode as { comment?: string }).comment),
        );
        if (!documented) missing.push(p);
        if (isMap(value)) walk(value, p, documented || parentDocumented);
      });
    }
  };
  walk(doc.contents as YamlNode, '', false);
  return missing;
}
