package stack

import (
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

type clientObject = client.Object

func isAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }
