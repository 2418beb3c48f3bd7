// Command kube-apiserver runs a real Kubernetes API server for tests, in-process on loopback:
// kube-apiserver itself, started by k8s.io/kubernetes's own test server
// (cmd/kube-apiserver/app/testing, the one Kubernetes' integration tests use), over an
// embedded etcd whose data lives in --data-dir (default: a temporary folder).
//
// It serves what a cluster's API server serves: core objects (Namespaces, Services,
// EndpointSlices, ...), RBAC (authorization Node,RBAC) and the default admission plugins but
// ServiceAccount, so a write into a missing namespace gets 404 as in a cluster. No
// kube-controller-manager runs: nothing is garbage-collected by owner references, a deleted
// namespace stays Terminating, Services with selectors get no EndpointSlices.
//
// It installs the CRDs found in --crds (files or folders), waits until they are Established,
// binds a read-only user to a ClusterRole that may get, list and watch, writes a kubeconfig to
// --kubeconfig (and the read-only user's to --readonly-kubeconfig), prints one line
// `ready <kubeconfig path>` on stdout and runs until SIGTERM or SIGINT (or, with
// --exit-on-stdin-eof, the end of stdin), then stops the API server and etcd, removes its
// temporary directories and exits 0. Everything else it says goes to stderr.
//
// Started again with the same --data-dir and --port, it serves the same objects at the same
// address to the same credentials: a test can stop the API server under a client and bring
// it back. See access.go.
//
// Build it without -trimpath (the test server finds its fixtures through the path of its own
// source file), and stamp the version, or /version says v0.0.0-master:
//
//	go build -ldflags "-X k8s.io/component-base/version.gitVersion=v1.37.2 ..." -o kube-apiserver .
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	kubetesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
	"k8s.io/kubernetes/test/utils/ktesting"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "where to write the kubeconfig for the API server (required)")
	crds := flag.String("crds", "", "CRD manifests to install: comma-separated files, or folders whose *.yaml and *.yml files are read; several documents per file are fine")
	dataDir := flag.String("data-dir", "", "where etcd and the API server keep their data (default: a new temporary folder, removed at exit)")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "stop as on SIGTERM when stdin reaches its end: a parent that holds the other end of a pipe stops this server by exiting, however it exits")
	port := flag.Int("port", 0, "the loopback port clients reach the server on (default: a free one); a server restarted with the same --port and --data-dir keeps its address, credentials and objects")
	readOnly := flag.String("readonly-kubeconfig", "", "where to write a kubeconfig for a user that may only get, list and watch")
	flag.Parse()
	if *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "--kubeconfig is required")
		os.Exit(2)
	}
	if err := run(*kubeconfig, *readOnly, *crds, *dataDir, *port, *stdinEOF); err != nil {
		fmt.Fprintf(os.Stderr, "apiserver: %v\n", err)
		os.Exit(1)
	}
}

func run(kubeconfigPath, readOnlyPath, crdPaths, dataDir string, port int, stdinEOF bool) (err error) {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	stdinClosed := make(chan struct{})
	if stdinEOF {
		// The parent that holds stdin may hold stdout and stderr too: once it is gone, a write
		// to them must fail rather than kill this process before it cleans up.
		signal.Ignore(syscall.SIGPIPE)
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stdinClosed)
		}()
	}

	if dataDir == "" {
		dataDir, err = os.MkdirTemp("", "testkit-apiserver-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dataDir)
	}

	etcd, etcdURL, err := startEtcd(filepath.Join(dataDir, "etcd"))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	creds, err := loadOrCreateCredentials(filepath.Join(dataDir, "pki"))
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}

	// A fixed prefix, so that a restart on the same data finds the objects again.
	storage := storagebackend.NewDefaultConfig("/testkit", nil)
	storage.Transport.ServerList = []string{etcdURL}
	t := newTestingT()
	defer t.cleanUp()
	server, err := kubetesting.StartTestServer(ktesting.InitCtx(context.Background(), t), &kubetesting.TestServerInstanceOptions{
		// Front-proxy credentials for the aggregator, as in a cluster; the client CA it makes
		// is replaced by ours (--client-ca-file below).
		EnableCertAuth: true,
		// The checks compare metrics at tear-down, for Kubernetes' own tests: not ours.
		DisableInvariantChecks: true,
	}, []string{
		// The serving certificate (apiserver.crt, .key) signed by the CA in the data folder,
		// which the kubeconfigs trust, so they stay valid after a restart.
		"--cert-dir", creds.servingDir,
		"--client-ca-file", creds.caFile,
		"--authorization-mode", "Node,RBAC",
		// Pods would need their ServiceAccount first, and the token controller that fills it
		// is kube-controller-manager's, which does not run here.
		"--disable-admission-plugins", "ServiceAccount",
		// A test that floods the server wants what it sends served, not queued by fairness.
		"--enable-priority-and-fairness=false",
	}, storage)
	if err != nil {
		return fmt.Errorf("API server: %w", err)
	}
	defer server.TearDownFn()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if crdPaths != "" {
		if err := installCRDs(ctx, server.ClientConfig, crdPaths); err != nil {
			return fmt.Errorf("CRDs: %w", err)
		}
	}
	if err := grantReadOnly(ctx, server.ClientConfig); err != nil {
		return fmt.Errorf("the read-only user's role: %w", err)
	}

	upstream, err := url.Parse(server.ClientConfig.Host)
	if err != nil {
		return fmt.Errorf("the server's address: %w", err)
	}
	front, err := startRelay(port, upstream.Host)
	if err != nil {
		return fmt.Errorf("listening on port %d: %w", port, err)
	}
	defer front.close()
	address := "https://" + front.addr()
	if err := writeKubeconfig(kubeconfigPath, address, creds.caCert, creds.adminCert, creds.adminKey); err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	if readOnlyPath != "" {
		if err := writeKubeconfig(readOnlyPath, address, creds.caCert, creds.readCert, creds.readKey); err != nil {
			return fmt.Errorf("read-only kubeconfig: %w", err)
		}
	}
	fmt.Printf("ready %s\n", kubeconfigPath)
	os.Stdout.Sync()

	select {
	case sig := <-signals:
		fmt.Fprintf(os.Stderr, "apiserver: %v, stopping\n", sig)
	case <-stdinClosed:
		fmt.Fprintln(os.Stderr, "apiserver: stdin closed, stopping")
	case err := <-etcd.Err():
		return fmt.Errorf("etcd stopped: %w", err)
	}
	return nil
}

// startEtcd starts a single-member etcd on free loopback ports, keeping its data in dir. A
// port is found free and then bound by etcd, so another process (another test's server) may
// take it in between: then it tries again on new ports.
func startEtcd(dir string) (*embed.Etcd, string, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var etcd *embed.Etcd
		var clientURL string
		etcd, clientURL, err = startEtcdOnce(dir)
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			return etcd, clientURL, err
		}
	}
	return nil, "", err
}

// startEtcdOnce is one attempt of startEtcd.
func startEtcdOnce(dir string) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}

	cfg := embed.NewConfig()
	cfg.Name = "testkit"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ListenMetricsUrls = nil
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	cfg.UnsafeNoFsync = true // test data: durability does not matter, speed does

	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-etcd.Server.ReadyNotify():
	case <-time.After(time.Minute):
		etcd.Close()
		return nil, "", errors.New("not ready after a minute")
	}
	return etcd, clientURL.String(), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// installCRDs creates every CustomResourceDefinition in paths (comma-separated YAML files or
// folders of them) and waits until each is Established.
func installCRDs(ctx context.Context, config *restclient.Config, paths string) error {
	client, err := clientset.NewForConfig(config)
	if err != nil {
		return err
	}
	files, err := crdFiles(strings.Split(paths, ","))
	if err != nil {
		return err
	}
	crds, err := readCRDs(files)
	if err != nil {
		return err
	}
	for _, crd := range crds {
		_, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s: %w", crd.Name, err)
		}
	}
	for _, crd := range crds {
		name := crd.Name
		err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("waiting for %s to be Established: %w", name, err)
		}
	}
	fmt.Fprintf(os.Stderr, "apiserver: %d CRDs Established\n", len(crds))
	return nil
}

// crdFiles lists the files of paths: a file as it is, a folder as its *.yaml and *.yml
// files in name order.
func crdFiles(paths []string) ([]string, error) {
	var files []string
	for _, path := range paths {
		info, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			files = append(files, path)
			continue
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, e := range entries {
			if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
				names = append(names, filepath.Join(path, e.Name()))
			}
		}
		sort.Strings(names)
		files = append(files, names...)
	}
	return files, nil
}

func readCRDs(files []string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var crd apiextensionsv1.CustomResourceDefinition
			if err := utilyaml.Unmarshal(doc, &crd); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if crd.Kind == "" && crd.Name == "" {
				continue // a document of comments only
			}
			if crd.Kind != "CustomResourceDefinition" {
				return nil, fmt.Errorf("%s: a %q, not a CustomResourceDefinition", name, crd.Kind)
			}
			crds = append(crds, &crd)
		}
	}
	if len(crds) == 0 {
		return nil, fmt.Errorf("no CustomResourceDefinition in %s", strings.Join(files, ", "))
	}
	return crds, nil
}

// writeKubeconfig writes a kubeconfig for the server at address, trusting ca, as the user of
// the client certificate and key.
func writeKubeconfig(path, address string, ca, cert, key []byte) error {
	cluster := clientcmdapi.NewCluster()
	cluster.Server = address
	cluster.CertificateAuthorityData = ca
	user := clientcmdapi.NewAuthInfo()
	user.ClientCertificateData = cert
	user.ClientKeyData = key
	context := clientcmdapi.NewContext()
	context.Cluster = "testkit"
	context.AuthInfo = "testkit"
	context.Namespace = "default"

	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["testkit"] = cluster
	kubeconfig.AuthInfos["testkit"] = user
	kubeconfig.Contexts["testkit"] = context
	kubeconfig.CurrentContext = "testkit"

	// Write then rename, so a reader never sees half a file.
	tmp := path + ".tmp"
	if err := clientcmd.WriteToFile(*kubeconfig, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
