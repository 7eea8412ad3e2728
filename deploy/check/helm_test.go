package check

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
)

const (
	chartDir = "../helm/warren"
	// kubeVersion is what `helm lint --kube-version` and `helm template
	// --kube-version` are given: the oldest Kubernetes the chart's
	// kubeVersion admits (Helm's own default in a test binary is 1.20).
	kubeVersion = "v1.30.0"
	namespace   = "warren"
)

// valuesCase is one release of the chart: the values a user would pass
// with -f (a file of deploy/helm/examples) and --set (set).
type valuesCase struct {
	name    string
	release string
	file    string
	set     map[string]any
}

var valuesCases = []valuesCase{
	{name: "defaults", release: "warren"},
	{name: "eu-west", release: "warren-eu", file: "../helm/examples/eu-west.yaml"},
	{name: "us-east", release: "warren-us", file: "../helm/examples/us-east.yaml"},
	{name: "small", release: "edge", set: map[string]any{
		"region": "edge-1", "zone": "edge-1a",
		"proxy":   map[string]any{"replicas": 1, "persistence": map[string]any{"enabled": false}, "antiAffinity": "hard", "shutdownGraceSeconds": 120},
		"service": map[string]any{"type": "ClusterIP", "http": false},
	}},
	{name: "agents dial the load balancer", release: "lb", set: map[string]any{
		"proxy": map[string]any{"agentsDial": "public", "publicAddr": "ssh.example.com:3023"},
	}},
}

func (c valuesCase) values(t *testing.T) map[string]any {
	t.Helper()
	vals := map[string]any{}
	if c.file != "" {
		data, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, &vals); err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
	}
	maps.Copy(vals, c.set)
	return vals
}

// TestHelmLint runs `helm lint --strict` on the chart with each values
// case, by Helm's own lint action (the code `helm lint` calls): a warning
// fails too.
func TestHelmLint(t *testing.T) {
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range valuesCases {
		t.Run(c.name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = namespace
			lint.KubeVersion = kv
			res := lint.Run([]string{chartDir}, c.values(t))
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
			}
			if len(res.Errors) > 0 || res.TotalChartsLinted != 1 {
				t.Fatalf("helm lint --strict: %d charts linted, errors: %v", res.TotalChartsLinted, res.Errors)
			}
		})
	}
}

// render is `helm template RELEASE deploy/helm/warren --namespace warren
// --kube-version 1.30.0` with the case's values, by the install action in
// client-only dry-run mode, which is what `helm template` runs. It returns
// the manifests by their template path.
func render(t *testing.T, name string, vals map[string]any) (map[string]string, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	inst := action.NewInstall(action.NewConfiguration())
	inst.DryRunStrategy = action.DryRunClient
	inst.ReleaseName = name
	inst.Namespace = namespace
	inst.Replace = true
	inst.KubeVersion = kv
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := inst.RunWithContext(ctx, chrt, vals)
	if err != nil {
		return nil, err
	}
	rel, ok := r.(*release.Release)
	if !ok {
		t.Fatalf("helm returned a %T, not a *release.Release", r)
	}
	return releaseutil.SplitManifests(rel.Manifest), nil
}

// decoder decodes strictly (an unknown or duplicate field is an error)
// into the API types of the kinds the chart may render; any other kind is
// an error too.
func decoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// objects are a release's rendered objects, by kind and name.
type objects map[string]runtime.Object

func (o objects) get(kind, name string) runtime.Object { return o[kind+"/"+name] }

func renderObjects(t *testing.T, c valuesCase) objects {
	t.Helper()
	manifests, err := render(t, c.release, c.values(t))
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	dec := decoder(t)
	objs := objects{}
	for _, m := range manifests {
		if strings.TrimSpace(m) == "" {
			continue
		}
		obj, gvk, err := dec.Decode([]byte(m), nil, nil)
		if err != nil {
			t.Fatalf("decode strictly:\n%s\n%v", m, err)
		}
		name := obj.(interface{ GetName() string }).GetName()
		objs[gvk.Kind+"/"+name] = obj
	}
	return objs
}

func TestHelmTemplate(t *testing.T) {
	for _, c := range valuesCases {
		t.Run(c.name, func(t *testing.T) {
			vals := c.values(t)
			objs := renderObjects(t, c)
			full := c.release
			if !strings.Contains(full, "warren") {
				full += "-warren"
			}
			want := []string{
				"ConfigMap/" + full + "-proxy", "StatefulSet/" + full + "-proxy",
				"Service/" + full + "-proxy-headless", "Service/" + full + "-proxy",
				"PodDisruptionBudget/" + full + "-proxy",
			}
			agents := dig[bool](vals, "agents", "enabled")
			if agents {
				want = append(want, "ConfigMap/"+full+"-agent", "Deployment/"+full+"-agent")
			}
			if got := slices.Sorted(maps.Keys(objs)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
				t.Fatalf("rendered %v, want %v", got, want)
			}
			sts := objs.get("StatefulSet", full+"-proxy").(*appsv1.StatefulSet)
			checkProxyPod(t, c, full, sts, objs)
			checkServices(t, c, full, sts, objs)
			cm := objs.get("ConfigMap", full+"-proxy").(*corev1.ConfigMap)
			checkProxyConfig(t, c, full, sts, cm)
			if agents {
				dep := objs.get("Deployment", full+"-agent").(*appsv1.Deployment)
				checkAgent(t, c, full, dep, objs.get("ConfigMap", full+"-agent").(*corev1.ConfigMap))
			}
		})
	}
}

// dig reads a nested value of the case's values (its zero value when
// absent).
func dig[T any](vals map[string]any, path ...string) T {
	var zero T
	var v any = vals
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return zero
		}
		v = m[p]
	}
	out, _ := v.(T)
	return out
}

func container(t *testing.T, spec corev1.PodSpec, name string, init bool) corev1.Container {
	t.Helper()
	list := spec.Containers
	if init {
		list = spec.InitContainers
	}
	for _, c := range list {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s (init %v)", name, init)
	return corev1.Container{}
}

func mount(t *testing.T, c corev1.Container, volume string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m
		}
	}
	t.Fatalf("container %s does not mount %s", c.Name, volume)
	return corev1.VolumeMount{}
}

func checkProxyPod(t *testing.T, c valuesCase, full string, sts *appsv1.StatefulSet, objs objects) {
	spec := sts.Spec.Template.Spec
	if sts.Spec.ServiceName != full+"-proxy-headless" {
		t.Errorf("serviceName %s, want the headless Service %s-proxy-headless", sts.Spec.ServiceName, full)
	}
	for k, v := range sts.Spec.Selector.MatchLabels {
		if sts.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod's labels %v", k, v, sts.Spec.Template.Labels)
		}
	}
	p := container(t, spec, "proxy", false)
	ports := map[string]int32{}
	for _, cp := range p.Ports {
		ports[cp.Name] = cp.ContainerPort
	}
	for name, port := range map[string]int32{"user": 3023, "tunnel": 3024, "http": 3080, "gossip": 3020, "gossip-udp": 3020, "peer": 3021, "region-gossip": 3022, "peer-far": 3025} {
		if ports[name] != port {
			t.Errorf("container port %s is %d, want %d", name, ports[name], port)
		}
	}
	probes := []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"readiness", p.ReadinessProbe, "/readyz"}, {"liveness", p.LivenessProbe, "/healthz"}, {"startup", p.StartupProbe, "/healthz"}}
	for _, pr := range probes {
		if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path || pr.probe.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe %+v, want GET %s on port http (3080)", pr.what, pr.probe, pr.path)
		}
	}
	// The drain must end before Kubernetes' SIGKILL: the preStop sleep,
	// the hand-off (at most 5 s), shutdown.grace and the gossip leave (2 s).
	if p.Lifecycle == nil || p.Lifecycle.PreStop == nil || p.Lifecycle.PreStop.Sleep == nil {
		t.Fatalf("no preStop sleep: %+v", p.Lifecycle)
	}
	grace := int64(dig[float64](c.values(t), "proxy", "shutdownGraceSeconds"))
	if grace == 0 {
		grace = 30
	}
	if got, atLeast := *spec.TerminationGracePeriodSeconds, p.Lifecycle.PreStop.Sleep.Seconds+5+grace+2; got <= atLeast {
		t.Errorf("terminationGracePeriodSeconds %d, want more than %d (preStop %d s + hand-off 5 s + shutdown.grace %d s + leave 2 s)",
			got, atLeast, p.Lifecycle.PreStop.Sleep.Seconds, grace)
	}
	// The authorities: from the Secret, read-only; the proxy reads the
	// 0600 copies on an in-memory volume, also read-only.
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	if s := vols["auth-secret"].Secret; s == nil || s.SecretName == "" {
		t.Errorf("auth-secret volume %+v is not a Secret", vols["auth-secret"])
	}
	if r := vols["run"].EmptyDir; r == nil || r.Medium != corev1.StorageMediumMemory {
		t.Errorf("run volume %+v: want an in-memory emptyDir (the CA keys' copies)", vols["run"])
	}
	init := container(t, spec, "config", true)
	if !mount(t, init, "auth-secret").ReadOnly || !mount(t, p, "run").ReadOnly {
		t.Error("the Secret (init container) and its copy (proxy) must be mounted read-only")
	}
	if sc := p.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("proxy securityContext %+v: want a read-only root and no privilege escalation", sc)
	}
	persist := dig[map[string]any](c.values(t), "proxy", "persistence")
	if enabled, set := persist["enabled"].(bool); set && !enabled {
		if vols["data"].EmptyDir == nil {
			t.Errorf("persistence off: data volume %+v, want an emptyDir", vols["data"])
		}
	} else if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != "data" {
		t.Errorf("persistence on: volumeClaimTemplates %+v, want one named data", sts.Spec.VolumeClaimTemplates)
	}
	pdb := objs.get("PodDisruptionBudget", full+"-proxy").(*policyv1.PodDisruptionBudget)
	if !matches(pdb.Spec.Selector.MatchLabels, sts.Spec.Template.Labels) || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget %+v: want maxUnavailable 1 over the proxies", pdb.Spec)
	}
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func checkServices(t *testing.T, c valuesCase, full string, sts *appsv1.StatefulSet, objs objects) {
	headless := objs.get("Service", full+"-proxy-headless").(*corev1.Service)
	if headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("headless Service: clusterIP %q publishNotReadyAddresses %v, want None and true (seeds resolve before the proxies are ready)",
			headless.Spec.ClusterIP, headless.Spec.PublishNotReadyAddresses)
	}
	users := objs.get("Service", full+"-proxy").(*corev1.Service)
	got := map[int32]string{}
	for _, p := range users.Spec.Ports {
		got[p.Port] = p.TargetPort.String()
	}
	want := map[int32]string{3023: "user", 3024: "tunnel", 3080: "http"}
	if http, set := dig[map[string]any](c.values(t), "service")["http"].(bool); set && !http {
		delete(want, 3080)
	}
	if !maps.Equal(got, want) {
		t.Errorf("users' Service ports %v, want %v", got, want)
	}
	for _, svc := range []*corev1.Service{headless, users} {
		if !matches(svc.Spec.Selector, sts.Spec.Template.Labels) {
			t.Errorf("Service %s selects %v, not the proxies (%v)", svc.Name, svc.Spec.Selector, sts.Spec.Template.Labels)
		}
	}
}

// runRender runs a rendered init container's render.sh as the pod would,
// with its env, the paths moved under dir.
func runRender(t *testing.T, script string, init corev1.Container, dir string, env map[string]string) {
	t.Helper()
	path := filepath.Join(dir, "render.sh")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", path)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range init.Env {
		v := e.Value
		if strings.HasPrefix(v, "/") {
			v = filepath.Join(dir, v)
		}
		if o, ok := env[e.Name]; ok {
			v = o
		}
		cmd.Env = append(cmd.Env, e.Name+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render.sh: %v\n%s", err, out)
	}
}

// checkProxyConfig renders the pod's proxy.yaml as the init container
// does and loads it with the proxy's own config loader, which rejects an
// unknown key; the auth_dir copy it makes must load as a cluster identity.
func checkProxyConfig(t *testing.T, c valuesCase, full string, sts *appsv1.StatefulSet, cm *corev1.ConfigMap) {
	dir := t.TempDir()
	auth := newAuthority(t, filepath.Join(dir, "etc/warren/auth-secret"))
	init := container(t, sts.Spec.Template.Spec, "config", true)
	podName := full + "-proxy-2"
	if err := os.MkdirAll(filepath.Join(dir, "etc/warren/template"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/warren/template/proxy.yaml"), []byte(cm.Data["proxy.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	runRender(t, cm.Data["render.sh"], init, dir, map[string]string{"POD_NAME": podName, "POD_IP": "10.1.2.3"})
	cfg, err := proxy.LoadConfig(filepath.Join(dir, "run/warren/config/proxy.yaml"))
	if err != nil {
		t.Fatalf("the proxy rejects the rendered proxy.yaml: %v", err)
	}
	cfg, err = cfg.CheckAndSetDefaults()
	if err != nil {
		t.Fatalf("the proxy rejects the rendered proxy.yaml: %v", err)
	}
	vals := c.values(t)
	region := dig[string](vals, "region")
	if region == "" {
		region = "default"
	}
	if cfg.ID != region+"-2" || cfg.Region != region {
		t.Errorf("id %q region %q, want %s-2 and %s", cfg.ID, cfg.Region, region, region)
	}
	if cfg.Gossip.Advertise != "10.1.2.3:3020" || cfg.Peer.Advertise != "10.1.2.3:3021" {
		t.Errorf("gossip.advertise %q peer.advertise %q, want the pod IP's", cfg.Gossip.Advertise, cfg.Peer.Advertise)
	}
	// Agents dial the tunnel address a proxy advertises: listen.tunnel
	// when it names a host, else public_addr's host.
	wantTunnel := "10.1.2.3:3024"
	if dig[string](vals, "proxy", "agentsDial") == "public" {
		wantTunnel = "0.0.0.0:3024"
	}
	if cfg.Listen.Tunnel != wantTunnel {
		t.Errorf("listen.tunnel %q, want %q", cfg.Listen.Tunnel, wantTunnel)
	}
	replicas := int(*sts.Spec.Replicas)
	extra := dig[[]any](vals, "proxy", "gossip", "extraSeeds")
	if len(cfg.Gossip.Seeds) != replicas+len(extra) {
		t.Errorf("seeds %v: want %d of this region and %d others", cfg.Gossip.Seeds, replicas, len(extra))
	}
	for i := range replicas {
		want := fmt.Sprintf("%s-proxy-%d.%s-proxy-headless.%s.svc.cluster.local:3020", full, i, full, namespace)
		if !slices.Contains(cfg.Gossip.Seeds, want) {
			t.Errorf("seeds %v lack %s", cfg.Gossip.Seeds, want)
		}
	}
	if want := dig[string](vals, "proxy", "publicAddr"); want != "" && cfg.PublicAddr != want {
		t.Errorf("public_addr %q, want %q", cfg.PublicAddr, want)
	}
	if grace := dig[float64](vals, "proxy", "shutdownGraceSeconds"); grace != 0 && cfg.Shutdown.Grace != time.Duration(grace)*time.Second {
		t.Errorf("shutdown.grace %s, want %vs", cfg.Shutdown.Grace, grace)
	}
	if cfg.AuthDir != "/run/warren/auth" || mount(t, init, "run").MountPath != "/run/warren" {
		t.Fatalf("auth_dir %s is not where the init container copies the Secret", cfg.AuthDir)
	}
	loadAuthority(t, filepath.Join(dir, "run/warren/auth"), auth)
}

func checkAgent(t *testing.T, c valuesCase, full string, dep *appsv1.Deployment, cm *corev1.ConfigMap) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "etc/warren/join-secret")
	if err := os.MkdirAll(secret, 0o755); err != nil {
		t.Fatal(err)
	}
	// As a Secret volume with an fsGroup shows it: group-readable.
	if err := os.WriteFile(filepath.Join(secret, "join_token"), []byte("0123456789abcdef0123456789abcdef\n"), 0o440); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "etc/warren/template"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/warren/template/agent.yaml"), []byte(cm.Data["agent.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	init := container(t, dep.Spec.Template.Spec, "config", true)
	podName := full + "-agent-7d9f8c6b5-x2x4q"
	runRender(t, cm.Data["render.sh"], init, dir, map[string]string{"POD_NAME": podName})
	cfg, err := agent.LoadConfig(filepath.Join(dir, "run/warren/config/agent.yaml"))
	if err != nil {
		t.Fatalf("the agent rejects the rendered agent.yaml: %v", err)
	}
	if cfg, err = cfg.CheckAndSetDefaults(); err != nil {
		t.Fatalf("the agent rejects the rendered agent.yaml: %v", err)
	}
	if want := fmt.Sprintf("%s-proxy.%s.svc.cluster.local:3024", full, namespace); cfg.Name != podName || !slices.Equal(cfg.Proxies, []string{want}) {
		t.Errorf("name %q proxies %v, want %s and [%s]", cfg.Name, cfg.Proxies, podName, want)
	}
	fi, err := os.Stat(filepath.Join(dir, strings.TrimPrefix(cfg.JoinTokenFile, "/")))
	if err != nil {
		t.Fatalf("join_token_file %s: %v", cfg.JoinTokenFile, err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("the join token's copy has mode %04o, want 0600 (the agent refuses a token others may read)", fi.Mode().Perm())
	}
	if !mount(t, init, "join-secret").ReadOnly {
		t.Error("the join token Secret must be mounted read-only")
	}
}

// TestHelmTemplateRefuses checks that the chart and this test catch what
// they are for: a proxy.yaml key the proxy does not know, and values the
// chart refuses.
func TestHelmTemplateRefuses(t *testing.T) {
	t.Run("unknown proxy.yaml key", func(t *testing.T) {
		c := valuesCase{name: "typo", release: "warren", set: map[string]any{
			"proxy": map[string]any{"config": map[string]any{"sesion": map[string]any{"dial_timeout": "5s"}}},
		}}
		objs := renderObjects(t, c)
		cm := objs.get("ConfigMap", "warren-proxy").(*corev1.ConfigMap)
		path := filepath.Join(t.TempDir(), "proxy.yaml")
		if err := os.WriteFile(path, []byte(cm.Data["proxy.yaml"]), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := proxy.LoadConfig(path)
		if err == nil || !strings.Contains(err.Error(), "sesion") {
			t.Fatalf("proxy.LoadConfig of a proxy.yaml with the key sesion: %v, want an error naming it", err)
		}
	})
	for _, tc := range []struct {
		name string
		set  map[string]any
		want string
	}{
		{"agents without a pin", map[string]any{"agents": map[string]any{"enabled": true, "resources": []any{map[string]any{"name": "db", "kind": "tcp", "addr": "db:5432"}}}}, "agents.caPin"},
		{"agents without resources", map[string]any{"agents": map[string]any{"enabled": true, "caPin": "SHA256:x"}}, "agents.resources"},
		{"unknown anti-affinity", map[string]any{"proxy": map[string]any{"antiAffinity": "sometimes"}}, "proxy.antiAffinity"},
		{"unknown agentsDial", map[string]any{"proxy": map[string]any{"agentsDial": "node"}}, "proxy.agentsDial"},
		{"no auth Secret", map[string]any{"auth": map[string]any{"existingSecret": ""}}, "auth.existingSecret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, "warren", tc.set)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("helm template: %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
