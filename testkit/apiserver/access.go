package main

// How clients reach the server, in a way that survives a restart on the same --data-dir: one
// CA kept in the data folder signs the serving certificate and the client certificates (the
// test server's own loopback token and certificates are new on every start), and a relay on a
// port that stays the same. Authorization is the server's own RBAC: the admin is in
// system:masters, and one user is bound to a ClusterRole that may only read, so tests can see
// what a denied write returns.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	restclient "k8s.io/client-go/rest"
)

const (
	// adminUser is in system:masters, which RBAC allows everything.
	adminUser = "testkit-admin"
	// readOnlyUser is bound to readOnlyRole: get, list and watch of everything, nothing else.
	readOnlyUser = "testkit-readonly"
	readOnlyRole = "testkit-readonly"
)

// credentials are the CA, as a file and as PEM, the folder with the serving certificate, and
// the certificates of the two users, as PEM.
type credentials struct {
	caFile              string
	caCert              []byte
	servingDir          string
	adminCert, adminKey []byte
	readCert, readKey   []byte
}

// loadOrCreateCredentials reads the credentials from dir, creating them on the first start.
func loadOrCreateCredentials(dir string) (*credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caCertFile := filepath.Join(dir, "ca.crt")
	if _, err := os.Stat(caCertFile); errors.Is(err, os.ErrNotExist) {
		if err := createCredentials(dir); err != nil {
			return nil, err
		}
	}
	creds := &credentials{caFile: caCertFile, servingDir: filepath.Join(dir, "serving")}
	for _, f := range []struct {
		name string
		into *[]byte
	}{
		{"ca.crt", &creds.caCert},
		{"admin.crt", &creds.adminCert}, {"admin.key", &creds.adminKey},
		{"readonly.crt", &creds.readCert}, {"readonly.key", &creds.readKey},
	} {
		data, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return nil, err
		}
		*f.into = data
	}
	return creds, nil
}

func createCredentials(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "testkit-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "serving"), 0o700); err != nil {
		return err
	}
	// The names kube-apiserver's own serving certificates carry: clients reach it on loopback,
	// through the relay, by IP.
	serving := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "testkit-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leaves := []struct {
		file     string
		template *x509.Certificate
	}{
		{"admin", &x509.Certificate{
			Subject:     pkix.Name{CommonName: adminUser, Organization: []string{"system:masters"}},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
		{"readonly", &x509.Certificate{
			Subject:     pkix.Name{CommonName: readOnlyUser},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
		// kube-apiserver reads its serving pair as <cert-dir>/apiserver.crt and .key.
		{filepath.Join("serving", "apiserver"), serving},
	}
	for i, leaf := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		leaf.template.SerialNumber = big.NewInt(int64(i + 2))
		leaf.template.NotBefore = time.Now().Add(-time.Hour)
		leaf.template.NotAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, leaf.template, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, leaf.file+".crt"), "CERTIFICATE", der); err != nil {
			return err
		}
		if err := writeKey(filepath.Join(dir, leaf.file+".key"), key); err != nil {
			return err
		}
	}
	if err := writeKey(filepath.Join(dir, "ca.key"), caKey); err != nil {
		return err
	}
	// Written last: its presence says the folder is complete.
	return writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

// grantReadOnly binds the read-only user to a ClusterRole that may get, list and watch
// everything (kept on a restart), and waits until the authorizer, which follows RBAC objects
// through a watch, allows it: the first request of a test would be denied otherwise.
func grantReadOnly(ctx context.Context, config *restclient.Config) error {
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: readOnlyRole},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"*"},
			Resources: []string{"*"},
			Verbs:     []string{"get", "list", "watch"},
		}},
	}
	if _, err := client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: readOnlyRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readOnlyRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: readOnlyUser}},
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               readOnlyUser,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Group: "networking.istio.io", Resource: "virtualservices"},
	}}
	return wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		got, err := client.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		return err == nil && got.Status.Allowed, nil
	})
}

// relay accepts connections on a fixed loopback address and copies them to the server, so
// the address in the kubeconfig outlives this process: a restarted server takes it over.
type relay struct {
	listener net.Listener
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startRelay(port int, upstream string) (*relay, error) {
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	r := &relay{listener: listener, conns: map[net.Conn]struct{}{}}
	go r.serve(upstream)
	return r, nil
}

func (r *relay) addr() string { return r.listener.Addr().String() }

func (r *relay) serve(upstream string) {
	for {
		client, err := r.listener.Accept()
		if err != nil {
			return
		}
		go r.pipe(client, upstream)
	}
}

func (r *relay) pipe(client net.Conn, upstream string) {
	server, err := net.Dial("tcp", upstream)
	if err != nil {
		client.Close()
		return
	}
	if !r.track(client, server) {
		return
	}
	done := make(chan struct{}, 2)
	copyHalf := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go copyHalf(server, client)
	go copyHalf(client, server)
	<-done
	client.Close()
	server.Close()
	r.untrack(client, server)
}

// track records a relayed pair, or closes it when the relay is already closed.
func (r *relay) track(conns ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *relay) untrack(conns ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range conns {
		delete(r.conns, c)
	}
}

// close stops accepting and cuts every relayed connection, as a server going away would.
func (r *relay) close() {
	r.listener.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
}
