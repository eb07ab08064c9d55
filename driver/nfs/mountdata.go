package nfs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// mountData is the NFS data string: the user's options, the version and
// the address. proto and mountproto follow the address family, because
// the kernel refuses proto=tcp with an IPv6 address.
func mountData(opts optList, version string, addr netip.Addr) string {
	parts := make([]string, 0, len(opts)+2)
	for _, m := range opts {
		if m.key == "proto" || m.key == "mountproto" {
			m.value = netid(m.value, addr.Is6())
		}
		parts = append(parts, m.String())
	}
	parts = append(parts, "vers="+version, "addr="+addr.String())
	return strings.Join(parts, ",")
}

// netid returns transport proto (tcp, udp, rdma, with or without 6) for
// the address family.
func netid(proto string, v6 bool) string {
	proto = strings.TrimSuffix(proto, "6")
	if v6 {
		return proto + "6"
	}
	return proto
}

// resolve returns the address to mount host from: host itself if it is an
// IP address, else the first IPv4 address it resolves to, else the first
// IPv6 one (the preference of Docker's local driver).
func (b *Backend) resolve(ctx context.Context, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, nil
	}
	var r Resolver = net.DefaultResolver
	if b.Resolver != nil {
		r = b.Resolver
	}
	addrs, err := b.lookup(ctx, r, host)
	if err != nil {
		return netip.Addr{}, resolveError(ctx, host, err)
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("server name %s resolves to no address; check its DNS records or /etc/hosts, or give the server's IP address", host)
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return addrs[0], nil
}

// lookup resolves host with r as the step "resolve server name".
func (b *Backend) lookup(ctx context.Context, r Resolver, host string) ([]netip.Addr, error) {
	if err := b.Faults.Check("resolve server name"); err != nil {
		return nil, err
	}
	return r.LookupNetIP(ctx, "ip", host)
}

func resolveError(ctx context.Context, host string, err error) error {
	var dns *net.DNSError
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("server name %s was not resolved within the deadline; check this host's DNS servers, or give the server's IP address", host)
	case errors.As(err, &dns) && dns.IsNotFound:
		return fmt.Errorf("cannot resolve server name %s: no such host; check the name (the plugin resolves it with the host's /etc/hosts and DNS), or give the server's IP address", host)
	default:
		return fmt.Errorf("cannot resolve server name %s: %v; check this host's DNS, or give the server's IP address", host, err)
	}
}

func joinVersions(v []string) string {
	return strings.Join(v, ", ")
}
